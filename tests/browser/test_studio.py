"""The studio in a real Chromium: points drawn where the planted clusters are (read from screenshot pixels),
labels per zoom level, hover, search, filters, lasso -> tag -> tags.json, and export of the tagged records.

The oracle is the planted map (tests/fixtures_map.py); screen positions are fitted from the screenshot itself
(blob centroids in pixels against planted centroids in data units), not taken from the page's own transform.
"""

from __future__ import annotations

import itertools
import json
import re

import numpy as np
import pytest

from fixtures_map import SEARCH_WORD, TOPICS, text_of, write_map

from .pages import BACKGROUND, canvas_pixels, drawn_mask, open_studio, save_artifact, served

pytestmark = pytest.mark.browser

N = 3000


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    return write_map(tmp_path_factory.mktemp("studio-browser"), N, rows_per_file=700, buffer_rows=256)


@pytest.fixture(scope="module")
def server(planted, studio_dist):
    with served(planted.path, studio_dist) as url:
        yield url


@pytest.fixture()
def page(chromium, server, planted):
    (planted.path / "tags.json").unlink(missing_ok=True)
    page = open_studio(chromium, server)
    yield page
    page.close()


# ------------------------------------------------------------------------------------------- pixel geometry
def kmeans(points: np.ndarray, k: int, iters: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Plain k-means with farthest-point seeding (deterministic): centres and labels."""
    centres = [points[0]]
    for _ in range(k - 1):
        d = np.min([((points - c) ** 2).sum(1) for c in centres], axis=0)
        centres.append(points[int(d.argmax())])
    centres = np.array(centres, dtype=float)
    for _ in range(iters):
        labels = np.argmin([((points - c) ** 2).sum(1) for c in centres], axis=0)
        centres = np.array([points[labels == j].mean(0) if (labels == j).any() else centres[j] for j in range(k)])
    return centres, labels


class ScreenFit:
    """data -> pixel, axis-aligned: px = a*x + c, py = b*y + d, fitted from the drawn blobs."""

    def __init__(self, planted, pixels):
        mask = drawn_mask(pixels)
        ys, xs = np.nonzero(mask)
        blobs, _ = kmeans(np.stack([xs, ys], 1).astype(float), 4)
        truth = np.array([planted.xy[planted.clusters[:, 0] == c].mean(0) for c in range(4)])
        best = None
        for perm in itertools.permutations(range(4)):
            px = blobs[list(perm)]
            ax, cx = np.polyfit(truth[:, 0], px[:, 0], 1)
            by, dy = np.polyfit(truth[:, 1], px[:, 1], 1)
            resid = np.hypot(ax * truth[:, 0] + cx - px[:, 0], by * truth[:, 1] + dy - px[:, 1])
            if best is None or resid.max() < best[0]:
                best = (resid.max(), ax, cx, by, dy)
        self.max_resid, self.a, self.c, self.b, self.d = best
        self.mask = mask

    def __call__(self, x, y):
        return self.a * np.asarray(x) + self.c, self.b * np.asarray(y) + self.d

    def box(self, pts) -> tuple[int, int, int, int]:
        """The pixel bounding box (left, top, right, bottom) of data points."""
        px, py = self(pts[:, 0], pts[:, 1])
        return int(px.min()), int(py.min()), int(np.ceil(px.max())), int(np.ceil(py.max()))


def test_points_are_drawn_where_the_planted_clusters_are(page, planted):
    pixels = canvas_pixels(page)
    fit = ScreenFit(planted, pixels)
    save_artifact(page, "studio.png")
    assert fit.mask.sum() > 3000, "the canvas is (almost) blank"
    # one consistent mapping puts all four blobs where they were planted: x grows rightwards, y upwards,
    # same scale on both axes (aspect ratio kept); a residual of a few pixels against ~30 px per unit
    assert fit.a > 0 and fit.b < 0 and abs(abs(fit.a) / abs(fit.b) - 1) < 0.05
    assert fit.max_resid < 0.3 * fit.a
    # every one of the 16 planted leaves is drawn at its place...
    for leaf in np.unique(planted.clusters[:, 2]):
        cx, cy = np.round(fit(*planted.xy[planted.clusters[:, 2] == leaf].mean(0))).astype(int)
        assert fit.mask[cy - 3:cy + 4, cx - 3:cx + 4].any(), f"nothing drawn at leaf {leaf}"
    # ...and nothing is drawn where nothing was planted (the gaps between the coarse blobs)
    for x, y in [(0.0, 0.0), (0.0, 7.0), (-8.0, -1.0), (9.0, 1.5)]:
        cx, cy = np.round(fit(x, y)).astype(int)
        assert not fit.mask[cy - 10:cy + 11, cx - 10:cx + 11].any(), f"stray pixels at ({x}, {y})"
    # colour by topic: the pixels of each planted coarse blob share one dominant colour, and the four differ
    dominant = []
    for c in range(4):
        pts = planted.xy[planted.clusters[:, 0] == c]
        x0, y0, x1, y1 = fit.box(pts)
        region = pixels[y0:y1, x0:x1][fit.mask[y0:y1, x0:x1]]
        assert len(region) > 200
        dominant.append(tuple(np.median(region, axis=0) // 24))
    assert len(set(dominant)) == 4


def label_texts(page):
    return {lab["text"] for lab in page.evaluate("window.__lmforge.labels()")}


def assert_no_overlap(labels):
    for a, b in itertools.combinations(labels, 2):
        apart = (a["left"] + a["width"] <= b["left"] or b["left"] + b["width"] <= a["left"]
                 or a["top"] + a["height"] <= b["top"] or b["top"] + b["height"] <= a["top"])
        assert apart, f"labels overlap: {a['text']!r} and {b['text']!r}"


def test_labels_float_over_clusters_and_refine_with_zoom(page, planted):
    fit = ScreenFit(planted, canvas_pixels(page))
    labels = page.evaluate("window.__lmforge.labels()")
    # the planted level-0 labels all end in "overview", a word of every coarse topic: it names none of them
    assert {lab["text"] for lab in labels} == set(TOPICS)
    for lab in labels:  # each coarse label sits over its own blob
        cx, cy = fit(*planted.xy[planted.clusters[:, 0] == lab["cluster"]].mean(0))
        assert abs(lab["left"] + lab["width"] / 2 - cx) < 25 and abs(lab["top"] + lab["height"] / 2 - cy) < 25
    assert_no_overlap(labels)

    # zoom with the mouse wheel over the "astronomy" blob: its subtopics replace the coarse labels
    box = page.locator("#canvas").bounding_box()
    ax, ay = fit(*planted.xy[planted.clusters[:, 0] == 0].mean(0))
    page.mouse.move(box["x"] + ax, box["y"] + ay)
    for _ in range(60):
        before = page.evaluate("window.__lmforge.zoom()")
        page.mouse.wheel(0, -30)
        page.wait_for_function(f"window.__lmforge.zoom() > {before}")
        if page.evaluate("window.__lmforge.zoom()") > 3:
            break
    page.wait_for_timeout(200)
    assert 3 < page.evaluate("window.__lmforge.zoom()") < 6  # the level-1 range
    mid = page.evaluate("window.__lmforge.labels()")
    texts = {lab["text"] for lab in mid}
    level1 = {planted.label(1, c) for c in (10, 11)}  # the astronomy subtopics (one may now be off-screen)
    assert texts & level1 and texts <= {planted.label(1, c) for c in range(10, 18)}
    assert_no_overlap(mid)

    # further in, the finest level shows
    page.evaluate("window.__lmforge.zoomTo(-11, 6, 8)")  # the centre of the "stars" subtopic
    fine = label_texts(page)
    assert {planted.label(2, 100), planted.label(2, 101)} <= fine
    assert not fine & level1


def test_hover_shows_the_record_under_the_cursor(page, planted):
    fit = ScreenFit(planted, canvas_pixels(page))
    box = page.locator("#canvas").bounding_box()
    leaf = 107
    x, y = fit(*planted.xy[planted.clusters[:, 2] == leaf].mean(0))
    page.mouse.move(box["x"] + x - 20, box["y"] + y - 20)
    page.mouse.move(box["x"] + x, box["y"] + y, steps=4)
    page.wait_for_selector("#hover:not(.hidden)", timeout=5000)
    row = int(re.search(r"row (\d+)", page.inner_text("#hover .card-row")).group(1))
    assert planted.clusters[row, 2] == leaf  # a record of the planted cluster under the cursor
    rec = planted.records[row]
    assert page.inner_text("#hover .card-id") == rec["id"]
    shown = page.inner_text("#hover .card-text")
    assert text_of(rec).split("\n")[0][:60] in shown.replace("user: ", "").replace("assistant: ", "")


def canvas_xy(page, planted) -> np.ndarray:
    """Every point's pixel position on the canvas [N, 2] (the page's transform: positions themselves are checked
    against the screenshot in test_points_are_drawn_where_the_planted_clusters_are)."""
    box = page.locator("#canvas").bounding_box()
    xy = page.evaluate("(pts) => pts.map(([x, y]) => window.__lmforge.toScreen(x, y))", planted.xy.tolist())
    return np.array(xy) - [box["x"], box["y"]]


def brightness(pixels, pos) -> np.ndarray:
    """How far from the background the pixel under each position is (sum of |RGB - background|)."""
    h, w = pixels.shape[:2]
    px = np.clip(np.floor(pos).astype(int), 0, [w - 1, h - 1])  # the pixel a position falls in
    return np.abs(pixels[px[:, 1], px[:, 0]] - BACKGROUND).sum(axis=1)


def nearest(pos, rows, others) -> np.ndarray:
    """Distance (px) from each of `rows` to the nearest of `others`."""
    d = np.hypot(*(pos[rows][:, None, :] - pos[others][None, :, :]).transpose(2, 0, 1))
    return d.min(axis=1)


def test_search_highlights_matches_and_tags_them(page, planted):
    want = [r for r, rec in enumerate(planted.records) if SEARCH_WORD in text_of(rec).lower()]
    before = canvas_pixels(page)
    page.fill("#search", SEARCH_WORD.capitalize())
    page.press("#search", "Enter")
    page.wait_for_function("window.__lmforge.searchRows() !== null")
    assert page.evaluate("window.__lmforge.searchRows()") == want
    assert page.inner_text("#search-result") == f"{len(want)} matches"
    # in pixels: every match stands out (drawn opaque, bigger), the other points fade
    page.wait_for_timeout(100)
    after, pos = canvas_pixels(page), canvas_xy(page, planted)
    assert (brightness(after, pos[want]) > 150).mean() > 0.95
    others = np.setdiff1d(np.arange(N), want)
    far = others[nearest(pos, others, want) > 8]  # not under a match's disc
    assert len(far) > 500
    assert np.median(brightness(after, pos[far])) < 0.4 * np.median(brightness(before, pos[far]))
    page.click("#search-select")
    page.wait_for_function(f"window.__lmforge.selection().length === {len(want)}")
    page.fill("#tag-name", "zanzibar hits")
    page.click("#tag-add")
    page.wait_for_selector('.tag[data-tag="zanzibar hits"]')
    tags = json.loads((planted.path / "tags.json").read_text())["tags"]
    assert tags == {"zanzibar hits": [planted.records[r]["id"] for r in want]}


def test_colour_by_a_signal_in_pixels(page, planted):
    """Colour by `short_answer`: the pixel at a point's centre has the colour of the topmost point covering
    it (points are drawn in row order, later on top), short answers in one colour and the rest in another."""
    short = np.array([r["messages"] is not None and len(r["messages"][-1]["content"].split()) < 5
                      for r in planted.records])  # the planted rule, from the records
    assert 100 < short.sum() < N - 100
    page.select_option("#color-by", "short_answer")
    page.wait_for_function("window.__lmforge.colorBy() === 'short_answer'")
    page.wait_for_timeout(100)
    pixels, pos = canvas_pixels(page), canvas_xy(page, planted)
    pix = np.floor(pos).astype(int)  # the pixel each point's centre falls in
    # the topmost point whose disc (4.5 px across) surely covers that pixel's centre; pixels that a later
    # point's antialiased rim may cover are left out as ambiguous
    d = np.hypot(*((pix + 0.5)[:, None, :] - pos[None, :, :]).transpose(2, 0, 1))  # [N, N]
    idx = np.arange(N)[None, :]
    top = np.where(d < 1.75, idx, -1).max(axis=1)
    rim = np.where((d >= 1.75) & (d < 2.75), idx, -1).max(axis=1)
    clear = rim < top
    assert clear.mean() > 0.4
    want = short[top][clear]
    colour = pixels[pix[:, 1], pix[:, 0]][clear]
    yes, no = np.median(colour[want], axis=0), np.median(colour[~want], axis=0)
    assert np.abs(yes - no).sum() > 90  # two clearly different colours
    got = np.abs(colour - yes).sum(1) < np.abs(colour - no).sum(1)
    assert (got == want).mean() > 0.95, (got == want).mean()


def shows(page, text: str) -> None:
    """The panel's record count reads `text` (it updates once the filtered frame is drawn)."""
    page.wait_for_function("(t) => document.getElementById('shown').textContent === t", arg=text, timeout=10_000)


def test_colour_by_a_signal_and_filter(page, planted):
    import pyarrow.parquet as pq

    # the expected counts come from the map's own files, read here with pyarrow
    points = pq.read_table(planted.path / "points.parquet").to_pandas()
    rows = points["row"].to_numpy()
    redundant = ((points["exact_dup"] >= 0) & (points["exact_dup"] != rows)).to_numpy()
    assert redundant.sum() == ((planted.exact >= 0) & (planted.exact != np.arange(N))).sum() > 0
    everything = drawn_mask(canvas_pixels(page)).sum()
    page.select_option("#color-by", "exact_dup")
    page.wait_for_function("window.__lmforge.colorBy() === 'exact_dup'")
    legend = page.inner_text("#legend")
    assert re.search(rf"redundant copy\s+{redundant.sum()}\b", legend)
    page.check("#hide-exact_dup")
    page.wait_for_function(f"window.__lmforge.visibleCount() === {N - redundant.sum()}")
    shows(page, f"{N - redundant.sum():,} of {N:,} records shown")
    lengths = points["length"].to_numpy()
    page.fill("#min-length", "100")
    page.fill("#max-length", "180")
    page.press("#max-length", "Enter")
    keep = ~redundant & (lengths >= 100) & (lengths <= 180)
    assert 0 < keep.sum() < N - redundant.sum()
    page.wait_for_function(f"window.__lmforge.visibleCount() === {keep.sum()}")
    shows(page, f"{keep.sum():,} of {N:,} records shown")
    # the filtered-out points are gone from the canvas too: keep only the chat records, which are 1 in 5
    page.click("#reset-filters")
    page.select_option("#filter-source", label="chat")
    chat = (points["source"] == "chat").to_numpy()
    page.wait_for_function(f"window.__lmforge.visibleCount() === {chat.sum()}")
    page.wait_for_timeout(100)
    pixels, pos = canvas_pixels(page), canvas_xy(page, planted)
    assert drawn_mask(pixels).sum() < 0.6 * everything
    shown, hidden = np.flatnonzero(chat), np.flatnonzero(~chat)
    alone = hidden[nearest(pos, hidden, shown) > 6]  # hidden points no shown point's disc reaches
    assert len(alone) > 100
    assert (brightness(pixels, pos[shown]) > 60).mean() > 0.98
    assert (brightness(pixels, pos[alone]) <= 60).mean() > 0.98


def test_lasso_tag_and_export(page, planted):
    fit = ScreenFit(planted, canvas_pixels(page))
    box = page.locator("#canvas").bounding_box()
    members = np.flatnonzero(planted.clusters[:, 0] == 1)  # the "baking" blob
    pts = planted.xy[members]
    x0, y0, x1, y1 = fit.box(pts)
    x0, x1, y0, y1 = box["x"] + x0 - 12, box["x"] + x1 + 12, box["y"] + y0 - 12, box["y"] + y1 + 12

    page.click("#mode-lasso")
    page.mouse.move(x0, y0)
    page.mouse.down()
    for x, y in [(x1, y0), (x1, y1), (x0, y1), (x0, y0 + 2)]:
        page.mouse.move(x, y, steps=12)
    page.mouse.up()
    page.wait_for_function("window.__lmforge.selection().length > 0")
    assert page.evaluate("window.__lmforge.selection()") == members.tolist()
    assert page.inner_text("#selection-count") == f"{len(members):,} selected"

    page.fill("#tag-name", "baking pick")
    page.click("#tag-add")
    page.wait_for_selector('.tag[data-tag="baking pick"]')
    ids = [planted.records[r]["id"] for r in members]
    assert json.loads((planted.path / "tags.json").read_text()) == {"tags": {"baking pick": ids}}
    want = [{k: v for k, v in planted.records[r].items() if v is not None} for r in members]

    with page.expect_download() as dl:
        page.click('.tag[data-tag="baking pick"] a')
    got = [json.loads(line) for line in open(dl.value.path(), encoding="utf-8")]
    assert got == want and dl.value.suggested_filename.endswith(".jsonl")

    with page.expect_download() as dl:
        page.click("#export-selection")
    assert [json.loads(line) for line in open(dl.value.path(), encoding="utf-8")] == want
    save_artifact(page, "studio-lasso.png")


def test_a_label_zooms_to_its_topic_and_leaves_the_points_under_it_hoverable(page, planted):
    leaf = 109
    cx, cy = planted.xy[planted.clusters[:, 2] == leaf].mean(0)
    page.evaluate(f"window.__lmforge.zoomTo({cx}, {cy}, 9)")
    label = page.locator(f'#labels .label[data-level="2"][data-cluster="{leaf}"]')
    assert label.is_visible()
    lb = label.bounding_box()
    # the label sits over the densest part of its leaf: hovering there still reaches the points
    page.mouse.move(lb["x"] + lb["width"] / 2 + 30, lb["y"] + lb["height"] / 2 + 30)
    page.mouse.move(lb["x"] + lb["width"] / 2, lb["y"] + lb["height"] / 2, steps=3)
    page.wait_for_selector("#hover:not(.hidden)", timeout=5000)
    row = int(re.search(r"row (\d+)", page.inner_text("#hover .card-row")).group(1))
    assert planted.clusters[row, 2] == leaf
    # clicking the coarse label zooms in on its topic and selects nothing
    page.evaluate("window.__lmforge.zoomTo(0, 0, 1)")
    coarse = page.locator('#labels .label[data-level="0"][data-cluster="3"]')
    zoom = page.evaluate("window.__lmforge.zoom()")
    coarse.click(force=True)  # labels let pointer events through to the map; force skips Playwright's hit check
    page.wait_for_function(f"window.__lmforge.zoom() > {zoom * 1.5}")
    assert page.evaluate("window.__lmforge.selection()") == []
    page.wait_for_timeout(600)
    shown = {lab["cluster"] for lab in page.evaluate("window.__lmforge.labels()")}
    assert shown and shown <= {16, 17, 112, 113, 114, 115}  # only its own subtopics are in view


# ------------------------------------------------------------------------------------------- level of detail
def wheel_over_canvas(page, dy=-120):
    box = page.locator("#canvas").bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.wheel(0, dy)


def lod(page):
    return page.evaluate("window.__lmforge.lod()")


def sampled_pixels(page):
    """The canvas while the level-of-detail sample is drawn (forced, so the camera can stay put)."""
    page.evaluate("window.__lmforge.lodForce(true)")
    page.wait_for_function("window.__lmforge.lod().sampled")
    pixels = canvas_pixels(page)
    stats = lod(page)
    page.evaluate("window.__lmforge.lodForce(false)")
    page.wait_for_function("!window.__lmforge.lod().sampled")
    return pixels, stats


def dilate(mask, r=1):
    out = mask.copy()
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            out |= np.roll(np.roll(mask, dy, 0), dx, 1)
    return out


def test_small_maps_always_draw_every_point(page):
    assert lod(page)["hooked"]  # the renderer found regl-scatterplot's point command
    before = page.evaluate("window.__lmforge.zoom()")
    wheel_over_canvas(page)
    page.wait_for_function(f"window.__lmforge.zoom() > {before}")
    page.wait_for_timeout(100)
    stats = lod(page)
    assert stats["sampledFrames"] == 0 and stats["glDrawn"] == stats["total"] == N


def test_level_of_detail_samples_while_moving_and_draws_everything_at_rest(chromium, server, planted):
    budget = 500  # of N = 3000 points
    page = open_studio(chromium, server + f"?lod={budget}&lodIdle=600")
    try:
        # at rest every point is drawn: counted where the page calls gl.drawArrays
        stats = lod(page)
        assert stats["hooked"] and not stats["sampled"] and stats["glDrawn"] == stats["total"] == N

        # real motion (the wheel): frames draw the sample, then everything once the camera rests
        f0 = stats["fullFrames"]
        wheel_over_canvas(page)
        page.wait_for_function("window.__lmforge.lod().sampled", polling="raf")
        stats = lod(page)
        assert stats["glDrawn"] == budget and stats["total"] == N
        page.wait_for_function(f"window.__lmforge.lod().fullFrames > {f0} && !window.__lmforge.lod().sampled")
        assert lod(page)["glDrawn"] == N
        page.evaluate("window.__lmforge.zoomTo(0, 0, 1)")
        page.wait_for_function("!window.__lmforge.lod().sampled")

        # the sample is a subset of the points: its pixels lie within the full drawing, and are fewer
        full = canvas_pixels(page)
        fit = ScreenFit(planted, full)
        sample, stats = sampled_pixels(page)
        assert stats["glDrawn"] == budget
        a, b = drawn_mask(full), drawn_mask(sample)
        assert 0.05 * a.sum() < b.sum() < 0.75 * a.sum()
        assert (b & ~dilate(a)).sum() <= 0.002 * b.sum()
        # ...and spread over the whole map: every planted leaf shows some of its points
        for leaf in np.unique(planted.clusters[:, 2]):
            cx, cy = np.round(fit(*planted.xy[planted.clusters[:, 2] == leaf].mean(0))).astype(int)
            assert b[cy - 8:cy + 9, cx - 8:cx + 9].any(), f"leaf {leaf} missing from the sample"

        # filtered-out points stay hidden in the sample: keep the chat records (600 > budget)
        chat = np.array([r["source"] == "chat" for r in planted.records])
        page.select_option("#filter-source", label="chat")
        page.wait_for_function(f"window.__lmforge.visibleCount() === {chat.sum()}")
        page.wait_for_function(f"window.__lmforge.lod().total === {chat.sum()}")
        full_f = drawn_mask(canvas_pixels(page))
        sample_f, stats = sampled_pixels(page)
        assert stats["total"] == chat.sum() and stats["glDrawn"] == budget
        sample_f = drawn_mask(sample_f)
        assert sample_f.sum() > 0 and (sample_f & ~dilate(full_f)).sum() <= 0.002 * sample_f.sum()
        page.click("#reset-filters")
        page.wait_for_function(f"window.__lmforge.lod().total === {N}")

        # a lasso drawn while the frames are sampled still selects every point inside it...
        members = np.flatnonzero(planted.clusters[:, 0] == 1)  # the "baking" blob
        x0, y0, x1, y1 = fit.box(planted.xy[members])
        box = page.locator("#canvas").bounding_box()
        lx0, ly0, lx1, ly1 = box["x"] + x0 - 12, box["y"] + y0 - 12, box["x"] + x1 + 12, box["y"] + y1 + 12
        s0 = lod(page)["sampledFrames"]
        page.click("#mode-lasso")
        page.mouse.move(lx0, ly0)
        page.mouse.down()
        for x, y in [(lx1, ly0), (lx1, ly1), (lx0, ly1), (lx0, ly0 + 2)]:
            page.mouse.move(x, y, steps=12)
        page.mouse.up()
        page.wait_for_function("window.__lmforge.selection().length > 0")
        assert page.evaluate("window.__lmforge.selection()") == members.tolist()
        assert lod(page)["sampledFrames"] > s0  # (the lasso's frames were sampled)
        page.wait_for_function("!window.__lmforge.lod().sampled")
        # ...and selected points are drawn in full in the sample too
        rest_sel = drawn_mask(canvas_pixels(page))[y0:y1, x0:x1]
        sample_sel = drawn_mask(sampled_pixels(page)[0])[y0:y1, x0:x1]
        assert sample_sel.sum() >= 0.95 * rest_sel.sum() > 0
    finally:
        page.close()
