"""Running a FastAPI app with uvicorn: on a free or checked port, in a thread (tests, benchmarks) or until
Ctrl+C (the CLI's `studio` and `serve`)."""

from __future__ import annotations

import socket
import threading
import time

from lmforge.errors import LmforgeError


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def check_port(host: str, port: int) -> None:
    """Fail before loading anything heavy when the port is taken."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            raise LmforgeError(f"cannot listen on {host}:{port} ({e.strerror})",
                               hint="pass another --port, or --port 0 for a free one") from None


def start_server(app, *, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning"):
    """Run `app` with uvicorn in a daemon thread; returns (url, stop). For tests and benchmarks."""
    import uvicorn

    port = port or free_port(host)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level=log_level))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the server did not start on {host}:{port}")
        time.sleep(0.02)

    def stop():
        server.should_exit = True
        thread.join(timeout=10)

    return f"http://{host}:{port}/", stop


def run_server(app, *, host: str, port: int, what: str, log_level: str = "warning",
               open_browser: bool = False) -> None:
    """Serve `app` until interrupted, printing where once it listens."""
    import webbrowser

    import uvicorn
    from rich.console import Console

    port = port or free_port(host)
    check_port(host, port)
    url = f"http://{'localhost' if host in ('127.0.0.1', '0.0.0.0') else host}:{port}/"
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level=log_level))

    def announce():
        while not server.started and not server.should_exit:
            time.sleep(0.05)
        if server.started:
            Console(highlight=False).print(f"{what} at [bold]{url}[/] (Ctrl+C to stop)")
            if open_browser:
                webbrowser.open(url)

    threading.Thread(target=announce, daemon=True).start()
    server.run()
