"""Studio rendering: time to first paint and frames per second of the studio's WebGL map with a million points,
in headless Chromium.

    python benchmarks/studio_render.py [--points 1000000] [--seconds 4] [--repeat 3] [--chromium /usr/bin/chromium]

The map is synthetic (tests/fixtures_map.py: planted blobs, a real lmforge dataset behind it) and cached in
$LMFORGE_CACHE/bench/. There is no peer to race: the figures are absolute and name their device. Without a GPU,
Chromium draws through SwiftShader (software GL on the CPU), so they are a floor for what a laptop with any GPU
does. Writes benchmarks/results/studio_render.json.

The studio draws a big map by level of detail (src/lmforge/studio/src/lod.ts): while the camera moves, a fixed
random sample of `lod.budget` points; once it has rested `lod.idle_ms`, every point. Figures (medians of
--repeat fresh page loads; the machine is shared and noisy, so `runs` keeps every value):
- first_paint_ms: navigation start -> the first frame on the canvas (on a big map: the sample), including the
  API calls and 9 bytes per point of typed arrays. full_paint_ms: -> the first frame with every point.
  load_ms: the page's milestones (meta, columns, points built, scatterplot created, draw called, points
  submitted = uploaded and spatial index built).
- moving_fps, moving_frame_ms: the page moves the camera (pan + zoom) on every animation frame for --seconds:
  the frame rate a user sees while panning and zooming (frames draw the sample).
- full_redraw_ms, rest_fps: the page redraws the unmoved map on every frame: a frame with every point.
- moving_fps_without_lod, moving_frame_ms_without_lod: the camera animation again with the level of detail
  off (?lod=0), every frame drawing every point. This is what earlier versions of this file called
  scripted_fps / frame_ms.
- mouse_redraws_per_s: Playwright drags and wheels the map for --seconds through real input events; the
  map's redraws per second (bounded by how fast the input arrives, too).
- idle_fps: the animation-frame rate with nothing to draw (the ceiling of the browser itself).
- baseline: the same page with --baseline-points points, in the same run: the per-frame cost that does not
  depend on points (full-canvas passes); point_ms_per_frame = full_redraw_ms - the baseline's.
- search_ms: a full-text search over every record (server side).
- hover: --hovers hovers over a dense part of the map (zoom 6 on one leaf, at rest, every point drawn), each
  onto a new point. The page draws the hovered point on its own layer (src/lmforge/studio/src/pointer.ts) and
  never redraws the map for it; it times each hover from the mouse event: hover_highlight_ms (-> the point
  highlighted) and hover_card_ms (-> the card shown with the record's text, fetched from the server after a
  25 ms debounce). hover_ms: the same, from Playwright's side (mouse move sent -> card visible, round trips
  included). Medians; hover_redraws counts map redraws during the hovers (0: none).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--use-gl=angle", "--use-angle=swiftshader",
               "--enable-unsafe-swiftshader"]


def synthetic_map(n: int) -> Path:
    """The cached synthetic map of n points (written once: about a minute per million records)."""
    import shutil

    from fixtures_map import write_map

    from lmforge.io import cache_dir

    root = cache_dir("bench") / f"studio-map-{n}-v1"
    if (root / "map" / "map.json").is_file():
        return root / "map"
    shutil.rmtree(root, ignore_errors=True)
    tmp = root.with_name(root.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    t0 = time.perf_counter()
    print(f"writing a synthetic map of {n:,} points to {root} ...", flush=True)
    write_map(tmp, n, keep_records=False, embedding_dim=8)
    # map.json names its dataset by absolute path: point it at the final location before the rename
    info = json.loads((tmp / "map" / "map.json").read_text())
    info["dataset"] = str((root / "dataset").resolve())
    (tmp / "map" / "map.json").write_text(json.dumps(info))
    tmp.rename(root)
    print(f"  done in {time.perf_counter() - t0:.0f} s", flush=True)
    return root / "map"


def open_page(browser, url: str, args):
    page = browser.new_page(viewport={"width": args.width, "height": args.height})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url)
    page.wait_for_function("window.__lmforge && (window.__lmforge.ready || window.__lmforge.error)",
                           timeout=600_000, polling=100)
    if page.evaluate("window.__lmforge.error") or errors:
        sys.exit(f"the studio failed: {page.evaluate('window.__lmforge.error') or errors}")
    return page


def frame_stats(result: dict) -> tuple[float, dict]:
    return round(result["fps"], 2), {k: round(v, 1) for k, v in result["frameMs"].items()}


def measure(browser, url: str, args, *, full: bool) -> dict:
    """Load the studio at `url` in a fresh page and time it; `full` adds the mouse, hover and screenshot runs."""
    page = open_page(browser, url, args)
    hooks = page.evaluate("({first: __lmforge.firstDrawMs, full: __lmforge.fullDrawMs, t: __lmforge.timings,"
                          " lod: __lmforge.lod(), n: __lmforge.n})")
    out = {"first_paint_ms": round(hooks["first"], 1), "full_paint_ms": round(hooks["full"], 1),
           "load_ms": hooks["t"],
           "js_heap_mb": page.evaluate(
               "performance.memory ? Math.round(performance.memory.usedJSHeapSize / 2**20) : null"),
           "lod": {"budget": hooks["lod"]["budget"], "idle_ms": hooks["lod"]["idleMs"]}}
    page.wait_for_timeout(500)
    f0, t = page.evaluate("window.__lmforge.frames"), time.perf_counter()
    page.wait_for_timeout(2000)
    out["idle_fps"] = round((page.evaluate("window.__lmforge.frames") - f0) / (time.perf_counter() - t), 1)
    out["moving_fps"], out["moving_frame_ms"] = frame_stats(page.evaluate(f"__lmforge.animate({args.seconds * 1000})"))
    out["lod"]["points_drawn_moving"] = page.evaluate("__lmforge.lod().glDrawn")
    page.wait_for_function("!__lmforge.lod().sampled")  # the camera rests: everything is drawn again
    rest = page.evaluate(f"__lmforge.redrawLoop({args.seconds * 1000})")
    out["rest_fps"], frames = frame_stats(rest)
    out["full_redraw_ms"] = frames["p50"]
    out["lod"]["points_drawn_rest"] = page.evaluate("__lmforge.lod().glDrawn")
    if full:
        page.evaluate("window.__lmforge.zoomTo(0, 0, 1)")
        # real input: drag to pan and wheel to zoom over the middle of the map; count the map's redraws
        box = page.locator("#canvas").bounding_box()
        cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        d0, t = page.evaluate("window.__lmforge.draws"), time.perf_counter()
        k = 0
        while time.perf_counter() - t < args.seconds:
            page.mouse.move(cx, cy)
            page.mouse.down()
            page.mouse.move(cx + (120 if k % 2 else -120), cy + 60, steps=8)
            page.mouse.up()
            page.mouse.wheel(0, -80 if k % 4 < 2 else 80)
            k += 1
        out["mouse_redraws_per_s"] = round((page.evaluate("window.__lmforge.draws") - d0) / (time.perf_counter() - t), 2)
        out.update(hovers(page, cx, cy, args.hovers))
        page.evaluate("window.__lmforge.zoomTo(0, 0, 1)")
        page.wait_for_function("!__lmforge.lod().sampled")
        Path(args.screenshot).parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=args.screenshot)
    out["renderer"] = page.evaluate("window.__lmforge.renderer()")
    page.close()
    if not 0 < out["lod"]["budget"] < hooks["n"]:  # small map: every frame draws every point anyway
        out["moving_fps_without_lod"], out["moving_frame_ms_without_lod"] = out["moving_fps"], out["moving_frame_ms"]
        return out
    # the same camera animation with the level of detail off: every frame draws every point
    page = open_page(browser, url + "?lod=0", args)
    page.wait_for_timeout(500)
    out["moving_fps_without_lod"], out["moving_frame_ms_without_lod"] = frame_stats(
        page.evaluate(f"__lmforge.animate({args.seconds * 1000})"))
    page.close()
    return out


def hovers(page, cx: float, cy: float, k: int) -> dict:
    """Hover k points of a dense leaf, one after another; medians of the page's and Playwright's timings."""
    import math
    import statistics

    page.evaluate("window.__lmforge.zoomTo(8, -4.2, 6)")  # the centre of a dense leaf
    page.wait_for_function("!__lmforge.lod().sampled")
    page.wait_for_timeout(300)
    wall, draws0 = [], page.evaluate("window.__lmforge.draws")
    for i in range(k):
        x, y = cx + 24 * math.cos(2 * math.pi * i / k), cy + 24 * math.sin(2 * math.pi * i / k)
        seen = page.evaluate("window.__lmforge.hovers.length")
        t = time.perf_counter()
        page.mouse.move(x, y)
        page.wait_for_function(f"(h => h.length > {seen} && h[h.length - 1].cardMs !== null)(window.__lmforge.hovers)",
                               timeout=60_000, polling="raf")
        wall.append(1000 * (time.perf_counter() - t))
        page.wait_for_timeout(50)
    timed = page.evaluate(f"window.__lmforge.hovers.slice(-{k})")
    return {"hover_ms": round(statistics.median(wall), 1),
            "hover_highlight_ms": round(statistics.median(h["highlightMs"] for h in timed), 1),
            "hover_card_ms": round(statistics.median(h["cardMs"] for h in timed), 1),
            "hover_redraws": page.evaluate("window.__lmforge.draws") - draws0,
            "hover_runs_ms": {"wall": [round(v, 1) for v in wall],
                              "highlight": [round(h["highlightMs"], 1) for h in timed],
                              "card": [round(h["cardMs"], 1) for h in timed]}}


def medians(runs: list[dict]) -> dict:
    """Per-key medians of numeric figures (nested dicts too); other values from the first run."""
    import statistics

    out = {}
    for key, value in runs[0].items():
        if isinstance(value, dict):
            out[key] = medians([r[key] for r in runs if key in r])
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            vals = [r[key] for r in runs if r.get(key) is not None]
            out[key] = round(statistics.median(vals), 2) if vals else None
        else:
            out[key] = value
    return out


def repeated(playwright, url: str, args, *, full: bool) -> tuple[dict, list[dict], str]:
    """--repeat runs, each in a fresh browser: a closed page's GL work can keep the shared GPU process (here
    SwiftShader on the CPU) busy for seconds and would be charged to the next page's load."""
    runs = []
    for i in range(args.repeat):
        browser = playwright.chromium.launch(executable_path=args.chromium, args=LAUNCH_ARGS)
        version = browser.version
        runs.append(measure(browser, url, args, full=full and i == 0))
        browser.close()
    return medians(runs), runs, version


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=1_000_000)
    ap.add_argument("--baseline-points", type=int, default=1_000,
                    help="a tiny map timed in the same run: the per-frame cost that does not depend on points")
    ap.add_argument("--seconds", type=float, default=4.0, help="length of each frame-rate measurement")
    ap.add_argument("--repeat", type=int, default=3, help="fresh page loads per map; figures are medians")
    ap.add_argument("--hovers", type=int, default=9, help="hovers timed (median)")
    ap.add_argument("--chromium", default=os.environ.get("LMFORGE_CHROMIUM", "/usr/bin/chromium"))
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=800)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "studio_render.json"))
    ap.add_argument("--screenshot", default=str(ROOT / "test-artifacts" / "studio_render.png"))
    args = ap.parse_args()

    import httpx
    from playwright.sync_api import sync_playwright

    from lmforge.io import machine_name
    from lmforge.serve.http import start_server
    from lmforge.serve.studio import STATIC_DIR, create_app

    if not (STATIC_DIR / "index.html").is_file():
        sys.exit("the studio front end is not built: run `make studio` first")
    maps = {"main": synthetic_map(args.points), "baseline": synthetic_map(args.baseline_points)}
    t0 = time.perf_counter()
    app = create_app(maps["main"])
    server_open_s = time.perf_counter() - t0
    url, stop = start_server(app)
    base_url, base_stop = start_server(create_app(maps["baseline"]))
    figures: dict = {"points": args.points, "server_open_s": round(server_open_s, 2)}
    try:
        t0 = time.perf_counter()
        hits = httpx.get(url + "api/search", params={"q": "zanzibar"}, timeout=300).json()
        figures["search_ms"] = round(1000 * (time.perf_counter() - t0), 1)
        figures["search_hits"] = hits["count"]
        with sync_playwright() as p:
            main_fig, runs, version = repeated(p, url, args, full=True)
            figures.update(main_fig)
            baseline, base_runs, _ = repeated(p, base_url, args, full=False)
    finally:
        stop()
        base_stop()
    renderer = figures.pop("renderer")
    baseline.pop("renderer")
    for run in runs + base_runs:
        run.pop("renderer")
    # what the points themselves cost per frame, over what any frame of this canvas costs
    figures["point_ms_per_frame"] = round(figures["full_redraw_ms"] - baseline["full_redraw_ms"], 1)

    result = {
        "benchmark": "studio_render",
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": {"cpu": machine_name(), "threads": len(os.sched_getaffinity(0)), "python": platform.python_version(),
                    "browser": f"Chromium {version} (headless, Playwright)", "webgl_renderer": renderer,
                    "gl": "software (SwiftShader via ANGLE; no GPU)" if "SwiftShader" in str(renderer) else "hardware",
                    "viewport": [args.width, args.height]},
        "peer": None,
        "note": "absolute figures on the named device; no peer renders this page. Medians of "
                f"{args.repeat} fresh page loads per map on a shared machine: noisy, see 'runs'. While the camera "
                "moves the page draws a random sample of lod.budget points (moving_fps); at rest every point "
                "(full_redraw_ms); moving_fps_without_lod is the same camera animation drawing every point "
                "(called scripted_fps before the level of detail). 'baseline' is the same page with "
                f"{args.baseline_points:,} points in the same run: software GL spends part of every frame on "
                "full-canvas passes (clear, float framebuffer, gamma pass, copy) whatever the point count",
        "figures": figures,
        "baseline": {"points": args.baseline_points, **baseline},
        "runs": {"main": runs, "baseline": base_runs},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"screenshot: {args.screenshot}")


if __name__ == "__main__":
    main()
