// lmforge studio: a WebGL map of a dataset. Points are drawn by regl-scatterplot from typed arrays the API
// serves; text, search, tags and exports go through the API on demand.

import createScatterplot from 'regl-scatterplot';
import './style.css';
import * as api from './api';
import type { Column, ColumnDesc, Meta, Topic } from './api';
import { BOOL_COLORS, GROUP_COLORS, GROUP_NAMES, RAMP_CSS, categorical, ramp } from './colors';
import { HoverCard } from './hover';
import { LabelLayer, type PlacedTopic, topicText } from './labels';
import { Lod, drawOrder, permutation } from './lod';
import { PointerLayer, withoutBuiltinHover } from './pointer';
import { linearScale } from './scale';
import { type Box, quantileOf, quantiles, robustBox } from './stats';

type Scatterplot = ReturnType<typeof createScatterplot>;

// ------------------------------------------------------------------------------------------ test/bench hooks
interface Hooks {
  ready: boolean;
  error: string | null;
  firstDrawMs: number | null; // the first frame (on a big map: the level-of-detail sample)
  fullDrawMs: number | null; // the first frame with every point
  timings: Record<string, number>; // load milestones (ms since navigation start)
  frames: number;
  draws: number;
  n: number;
  // per hover: ms from the mouse event to the highlight drawn and to the card shown (the latest 50)
  hovers: { row: number; highlightMs: number; cardMs: number | null }[];
  [key: string]: unknown;
}
declare global {
  interface Window {
    __lmforge: Hooks;
  }
}
const hooks: Hooks = {
  ready: false, error: null, firstDrawMs: null, fullDrawMs: null, timings: {}, frames: 0, draws: 0, n: 0, hovers: [],
};
const mark = (name: string) => (hooks.timings[name] = Math.round(performance.now()));
window.__lmforge = hooks;
const countFrames = () => {
  hooks.frames++;
  requestAnimationFrame(countFrames);
};
requestAnimationFrame(countFrames);

// Level of detail (lod.ts): maps with more points than this draw a fixed random sample of this many while the
// camera moves, and everything once it has rested LOD_IDLE_MS. ~120k keeps software GL (no GPU) at several
// frames per second; with a GPU a million points draw at full rate anyway. URL: ?lod=N (0: off), ?lodIdle=MS.
const LOD_BUDGET = 120_000;
const LOD_IDLE_MS = 180;
const LOD_SEED = 20_241_125;

const NICE: Record<string, string> = { short_answer: 'short answers', contaminated: 'contaminated records' };
const $ = <T extends HTMLElement = HTMLElement>(id: string) => document.getElementById(id) as T;
const fmt = (v: number) => v.toLocaleString('en-US');

function setStatus(text: string, error = false): void {
  const s = $('message');
  s.textContent = text;
  s.classList.toggle('error', error);
}

// ------------------------------------------------------------------------------------------ the studio
class Studio {
  private sp!: Scatterplot;
  private pts: number[][];
  private n: number;
  private cols: Map<string, ColumnDesc>;
  private xScale = linearScale();
  private yScale = linearScale();
  private labels!: LabelLayer;
  private hover!: HoverCard;
  private pointer!: PointerLayer;
  private hoverGated = false;
  private visibleRows: Uint8Array | null = null; // the filter as a mask (null: everything shown)
  private colors: string[] = [];
  private full: Box; // every point, normalised (the first view fits the points within the fences: [-1, 1])
  private outside: number; // points outside the first view's box
  private topicsByKey = new Map<string, Topic>();
  private spatialIndex: ArrayBuffer | undefined;
  private zType: 'categorical' | 'continuous' = 'categorical';
  private drawing: Promise<void> | null = null;
  private pendingDraw = false;
  private selection: number[] = [];
  private visible: number[] | null = null;
  private searchRows: number[] | null = null;
  private colorBy = '';
  private shownColorBy = '';
  private basePointSize: number;
  private performanceMode: boolean;
  private baseOpacity: number;
  private mouse = { x: 0, y: 0 };
  private norm: (x: number, y: number) => [number, number];
  private lod: Lod;
  private order: Int32Array | null = null; // the seeded draw order, when the map is bigger than the LOD budget
  private ordered = false; // search matches are at the end of the draw order

  constructor(
    private meta: Meta,
    topics: Topic[],
    xs: Column,
    ys: Column,
  ) {
    this.n = meta.records;
    this.cols = new Map(meta.columns.map((c) => [c.name, c]));
    // fit the points within the fences (stats.ts) into [-1, 1] keeping the aspect ratio: the first view and
    // Reset view. Outliers lie beyond; "Fit all" shows them.
    const { all, inner, outside } = robustBox(xs, ys);
    const cx = (inner.x0 + inner.x1) / 2;
    const cy = (inner.y0 + inner.y1) / 2;
    const half = (Math.max(inner.x1 - inner.x0, inner.y1 - inner.y0) / 2) * 1.06 || 1;
    this.norm = (x, y) => [(x - cx) / half, (y - cy) / half];
    const [fx0, fy0] = this.norm(all.x0, all.y0);
    const [fx1, fy1] = this.norm(all.x1, all.y1);
    this.full = { x0: fx0, y0: fy0, x1: fx1, y1: fy1 };
    this.outside = outside;
    this.pts = new Array(this.n);
    for (let i = 0; i < this.n; i++) {
      this.pts[i] = [(xs[i] - cx) / half, (ys[i] - cy) / half, 0, 1];
    }
    for (const t of topics) this.topicsByKey.set(`${t.level}:${t.cluster}`, t);
    const placed: PlacedTopic[] = topics.map((t) => {
      const [nx, ny] = this.norm(t.x, t.y);
      return { ...t, nx, ny, nr: (t.radius ?? 0) / half };
    });
    const params = new URLSearchParams(window.location.search);
    this.basePointSize =
      Number(params.get('pointSize')) || (this.n > 400_000 ? 1.5 : this.n > 100_000 ? 2 : this.n > 20_000 ? 3 : 4.5);
    this.performanceMode = params.has('performance') ? params.get('performance') !== '0' : this.n > 3_000_000;
    this.baseOpacity = this.n > 200_000 ? 0.55 : this.n > 20_000 ? 0.75 : 0.9;
    const num = (k: string, d: number) => {
      const v = Number(params.get(k) ?? NaN);
      return params.has(k) && Number.isFinite(v) ? v : d;
    };
    this.lod = new Lod({ budget: num('lod', LOD_BUDGET), idleMs: num('lodIdle', LOD_IDLE_MS) });
    this.lod.opacity = this.baseOpacity;
    if (this.lod.budget > 0 && this.n > this.lod.budget) this.order = permutation(this.n, LOD_SEED);
    this.labels = new LabelLayer($('labels'), placed, meta.levels);
    this.hover = new HoverCard($('hover'), (p) => this.topicPath(p), (row) => this.onCardShown(row));
    this.pointer = new PointerLayer($<HTMLCanvasElement>('hover-layer'), this.pts);
  }

  async start(): Promise<void> {
    const canvas = $<HTMLCanvasElement>('canvas');
    const stage = $('stage');
    const { width, height } = stage.getBoundingClientRect();
    const renderer = this.lod.createRenderer();
    renderer.resize(width, height); // the renderer draws exactly the stage, not the whole window
    this.pointer.resize(width, height);
    const created = withoutBuiltinHover(() => createScatterplot({
      canvas,
      renderer,
      width,
      height,
      // a random draw order: the level-of-detail sample is its tail (and no source is always drawn on top)
      ...(this.order ? { pointOrder: drawOrder(this.order, null) } : {}),
      xScale: this.xScale as never,
      yScale: this.yScale as never,
      backgroundColor: '#0e1116',
      pointSize: this.basePointSize,
      pointSizeSelected: 1,
      pointOutlineWidth: 1,
      opacity: this.baseOpacity,
      opacityInactiveScale: 0.35,
      pointColorActive: '#ffffff',
      pointColorHover: '#ffffff',
      lassoColor: '#ffd43b',
      lassoMinDelay: 8,
      lassoMinDist: 2,
      spatialIndexUseWorker: false, // the worker path clones every point; building inline is faster
      performanceMode: this.performanceMode, // square points, no blending: for the largest maps
    }));
    this.sp = created.result;
    this.hoverGated = created.gated;
    if (!created.gated) console.warn('lmforge: regl-scatterplot hover not found (regl-scatterplot changed)');
    mark('scatterplot');
    this.lod.view = () => (this.sp.get('camera') as { view: ArrayLike<number> }).view;
    this.lod.redraw = () => this.sp.redraw();
    this.sp.subscribe('view', () => {
      this.unhover(); // the point under the card has moved away
      this.keepPointSize();
      this.scheduleLabels();
    });
    this.sp.subscribe('draw', () => {
      hooks.draws++;
    });
    this.sp.subscribe('select', ({ points }) => this.onSelect(points));
    this.sp.subscribe('deselect', () => this.onSelect([]));
    canvas.addEventListener('mousemove', (ev) => {
      const r = canvas.getBoundingClientRect();
      this.mouse = { x: ev.clientX - r.left, y: ev.clientY - r.top };
      if (ev.buttons) {
        this.lod.moved(); // dragging: panning or drawing a lasso, both redraw every frame
        this.unhover();
      } else this.hoverAt(this.mouse.x, this.mouse.y, ev.timeStamp);
      this.hover.place(this.mouse.x, this.mouse.y);
      stage.classList.toggle('over-label', this.labels.pointAt(this.mouse.x, this.mouse.y));
    });
    // a click on a label zooms to its topic (Shift: selects it); caught before the map's own click handler
    let down = [0, 0];
    stage.addEventListener('mousedown', (ev) => (down = [ev.clientX, ev.clientY]), { capture: true });
    stage.addEventListener(
      'click',
      (ev) => {
        if (Math.hypot(ev.clientX - down[0], ev.clientY - down[1]) >= 4) return;
        const r = canvas.getBoundingClientRect();
        const topic = this.labels.hit(ev.clientX - r.left, ev.clientY - r.top);
        if (!topic || ev.target !== canvas) return;
        ev.stopPropagation();
        this.onLabelClick(topic, ev);
      },
      { capture: true },
    );
    canvas.addEventListener('mousedown', () => this.unhover());
    canvas.addEventListener('mouseleave', () => this.unhover());
    let size = [width, height];
    new ResizeObserver(() => {
      const r = stage.getBoundingClientRect();
      // (the observer also reports the initial size: redrawing a million points for it would cost a frame)
      if (r.width > 0 && r.height > 0 && (r.width !== size[0] || r.height !== size[1])) {
        size = [r.width, r.height];
        renderer.resize(r.width, r.height);
        renderer.refresh();
        this.pointer.resize(r.width, r.height);
        this.sp.set({ width: r.width, height: r.height });
      }
      this.scheduleLabels();
    }).observe(stage);

    this.buildPanel();
    const first = this.cols.has('cluster_0') ? 'cluster_0' : [...this.cols.values()].find((c) => c.kind !== 'coord')?.name;
    if (first) {
      await this.setColorBy(first, false);
    }
    // on a big map the first frame draws the level-of-detail sample (fast), the next one every point
    let onFirst = () => {};
    let onFull = () => {};
    const firstFrame = new Promise<void>((resolve) => (onFirst = resolve));
    const fullFrame = new Promise<void>((resolve) => (onFull = resolve));
    const onDraw = () => {
      onFirst();
      if (!this.lod.sampled) onFull();
    };
    this.sp.subscribe('draw', onDraw); // (published once the frame is on the canvas)
    this.lod.sampleNext();
    mark('draw');
    await this.redraw();
    hooks.timings.submitted = Math.round(this.lod.firstFrameAt ?? 0); // points uploaded, spatial index built
    this.spatialIndex = this.sp.get('spatialIndex');
    this.pointer.setIndex(this.spatialIndex);
    await firstFrame;
    hooks.firstDrawMs = performance.now();
    if (this.order && !this.lod.hooked) console.warn('lmforge: level of detail unavailable (regl-scatterplot changed)');
    this.updateLabels();
    this.updateCounts();
    $('loading').classList.add('hidden');
    void this.refreshTags();
    this.installHooks();
    await fullFrame;
    hooks.fullDrawMs = performance.now();
    this.sp.unsubscribe('draw', onDraw);
    hooks.ready = true;
  }

  // ------------------------------------------------------------------------------- drawing
  /** Redraw with the current colours and highlights; calls made while drawing are coalesced into one. */
  private redraw(): Promise<void> {
    if (this.drawing) {
      this.pendingDraw = true;
      return this.drawing;
    }
    this.drawing = (async () => {
      do {
        this.pendingDraw = false;
        await this.sp.draw(this.pts, {
          zDataType: this.zType,
          wDataType: 'categorical',
          spatialIndex: this.spatialIndex,
          preventFilterReset: true,
          ...(this.selection.length ? { select: this.selection } : {}),
        });
      } while (this.pendingDraw);
    })().finally(() => {
      this.drawing = null;
    });
    return this.drawing;
  }

  // ------------------------------------------------------------------------------- hover (pointer.ts)
  /** Hover the visible point under canvas pixel (x, y), if any: highlight it on its own layer (no redraw of
   * the map) and ask for its card. `at` is the mouse event's time stamp. */
  private hoverAt(x: number, y: number, at: number): void {
    const row = this.pointer.find(x, y, this.xScale, this.yScale, this.pointSize() / 2 + 3, this.visibleRows);
    if (row === this.pointer.row) return;
    if (row < 0) {
      this.unhover();
      return;
    }
    this.pointer.draw(this.xScale, this.yScale, this.pointSize(), row, this.colorOf(row));
    hooks.hovers.push({ row, highlightMs: performance.now() - at, cardMs: null });
    if (hooks.hovers.length > 50) hooks.hovers.shift();
    this.hoverStart = at;
    this.hover.show(row, x, y);
  }

  private hoverStart = 0;
  private onCardShown(row: number): void {
    const last = hooks.hovers[hooks.hovers.length - 1];
    if (last && last.row === row && last.cardMs === null) last.cardMs = performance.now() - this.hoverStart;
  }

  private unhover(): void {
    if (this.pointer.row >= 0) this.pointer.draw(null, null, 0);
    this.hover.hide();
  }

  /** The colour a row is drawn in (its highlight's fill). */
  private colorOf(row: number): string {
    const v = this.pts[row][2];
    const k = this.colors.length;
    if (!k) return '#ffffff';
    return this.colors[this.zType === 'continuous' ? Math.round(v * (k - 1)) : v % k];
  }

  private labelFrame = 0;
  private scheduleLabels(): void {
    if (this.labelFrame) return;
    this.labelFrame = requestAnimationFrame(() => {
      this.labelFrame = 0;
      this.updateLabels();
    });
  }

  /** Show every point, outliers included (the first view and Reset view fit the points within the fences). */
  private fitAll(transition: boolean): Promise<void> {
    const f = this.full;
    const rect = { x: f.x0, y: f.y0, width: f.x1 - f.x0, height: f.y1 - f.y0 };
    const pad = 0.04 * Math.max(rect.width, rect.height);
    return this.sp.zoomToArea(
      { x: rect.x - pad, y: rect.y - pad, width: rect.width + 2 * pad, height: rect.height + 2 * pad },
      transition ? { transition: true, transitionDuration: 300 } : {},
    );
  }

  /** Zoomed out, points keep their size (regl-scatterplot would shrink them towards 1 px, and a small far
   * cluster would vanish); zoomed in, they grow as regl-scatterplot's asinh mode makes them. */
  private scaleMode: 'asinh' | 'constant' = 'asinh';
  private keepPointSize(): void {
    const mode = this.zoom() < 1 ? 'constant' : 'asinh';
    if (mode === this.scaleMode) return;
    this.scaleMode = mode;
    void this.sp.set({ pointScaleMode: mode });
  }

  /** The diameter points are drawn with at the current zoom (px). */
  private pointSize(): number {
    const z = this.zoom();
    return this.basePointSize * (z > 1 ? Math.asinh(z) / Math.asinh(1) : 1);
  }

  private zoom(): number {
    const cam = this.sp.get('camera') as { distance: number[] };
    return 1 / cam.distance[0];
  }

  private updateLabels(): void {
    const r = $('stage').getBoundingClientRect();
    this.labels.update(this.xScale, this.yScale, r.width, r.height, this.pointSize());
    $('zoom').textContent = `zoom ${this.zoom().toFixed(1)}× · topic level ${this.labels.level}`;
  }

  private topicPath(p: Record<string, unknown>): string {
    const parts: string[] = [];
    for (let k = 0; k < this.meta.levels; k++) {
      const t = this.topicsByKey.get(`${k}:${p[`cluster_${k}`]}`);
      if (t) parts.push(topicText(t, 30));
    }
    return parts.join(' › ');
  }

  // ------------------------------------------------------------------------------- colour
  private async setColorBy(name: string, draw = true): Promise<void> {
    const desc = this.cols.get(name);
    if (!desc) return;
    this.colorBy = name;
    const data = await api.column(desc);
    if (this.colorBy !== name) return; // another choice arrived meanwhile
    const pts = this.pts;
    let colors: string[];
    if (desc.kind === 'numeric') {
      const q = quantiles(data, 256);
      for (let i = 0; i < this.n; i++) pts[i][2] = quantileOf(q, data[i]);
      colors = ramp(64);
      this.zType = 'continuous';
    } else {
      for (let i = 0; i < this.n; i++) pts[i][2] = data[i];
      colors =
        desc.kind === 'bool' ? BOOL_COLORS : desc.kind === 'group' ? GROUP_COLORS : categorical(desc.categories?.length ?? 1);
      this.zType = 'categorical';
    }
    await this.sp.set({ colorBy: 'valueA', pointColor: colors });
    this.colors = colors;
    this.renderLegend(desc, data, colors);
    if (draw) await this.redraw();
    this.shownColorBy = name;
  }

  private renderLegend(desc: ColumnDesc, data: Column, colors: string[]): void {
    const legend = $('legend');
    legend.replaceChildren();
    if (desc.kind === 'numeric') {
      const q = quantiles(data, 4);
      const bar = document.createElement('div');
      bar.className = 'ramp';
      bar.style.background = RAMP_CSS;
      const ticks = document.createElement('div');
      ticks.className = 'ramp-ticks';
      for (const v of [q[0], q[2], q[4]]) {
        const s = document.createElement('span');
        s.textContent = desc.integer ? fmt(Math.round(v)) : v.toFixed(2);
        ticks.append(s);
      }
      const note = document.createElement('div');
      note.className = 'hint';
      note.textContent = 'colour by rank: min · median · max';
      legend.append(bar, ticks, note);
      return;
    }
    const k = colors.length;
    const counts = new Array(Math.max(k, desc.categories?.length ?? 0)).fill(0);
    for (let i = 0; i < data.length; i++) counts[data[i]]++;
    const names = (c: number): string => {
      if (desc.kind === 'bool') return c ? 'yes' : 'no';
      if (desc.kind === 'group') return GROUP_NAMES[c];
      const cat = desc.categories?.[c];
      if (desc.kind === 'cluster') {
        const t = this.topicsByKey.get(`${desc.level}:${cat}`);
        return t ? topicText(t, 34) : `cluster ${cat}`;
      }
      return String(cat === '' ? '(none)' : cat);
    };
    const order = counts.map((c, i) => [c, i]).filter(([c]) => c > 0).sort((a, b) => b[0] - a[0]);
    for (const [count, code] of order.slice(0, 14)) {
      const item = document.createElement('button');
      item.className = 'legend-item';
      item.title = 'select these points';
      item.dataset.code = String(code);
      const sw = document.createElement('span');
      sw.className = 'swatch';
      sw.style.background = colors[code % colors.length];
      const label = document.createElement('span');
      label.className = 'legend-label';
      label.textContent = names(code);
      const cnt = document.createElement('span');
      cnt.className = 'count';
      cnt.textContent = fmt(count);
      item.append(sw, label, cnt);
      item.addEventListener('click', () => this.selectWhere(data, code));
      legend.append(item);
    }
    if (order.length > 14) {
      const more = document.createElement('div');
      more.className = 'hint';
      more.textContent = `… and ${fmt(order.length - 14)} more`;
      legend.append(more);
    }
  }

  private selectWhere(data: Column, code: number): void {
    const rows: number[] = [];
    const vis = this.visibleMask();
    for (let i = 0; i < this.n; i++) if (data[i] === code && (!vis || vis[i])) rows.push(i);
    this.sp.select(rows);
  }

  // ------------------------------------------------------------------------------- search
  private async runSearch(q: string): Promise<void> {
    q = q.trim();
    if (!q) {
      this.clearSearch();
      return;
    }
    setStatus(`searching for “${q}”…`);
    try {
      const res = await api.search(q);
      for (let i = 0; i < this.n; i++) this.pts[i][3] = 0;
      for (const r of res.rows) this.pts[r][3] = 1;
      this.lod.opacity = null;
      // the matches go to the end of the draw order: drawn on top, and always in the level-of-detail sample
      const order = this.order ? { pointOrder: drawOrder(this.order, res.rows) } : {};
      this.ordered = Boolean(this.order);
      await this.sp.set({
        ...order,
        opacityBy: 'valueB',
        sizeBy: 'valueB',
        opacity: [0.06, 1] as never,
        pointSize: [this.basePointSize, this.basePointSize + 2.5] as never,
      });
      await this.redraw();
      const shown = res.truncated ? `${fmt(res.rows.length)} of ${fmt(res.count)}` : fmt(res.count);
      $('search-result').textContent = `${shown} match${res.count === 1 ? '' : 'es'}`;
      $('search-actions').classList.toggle('hidden', res.count === 0);
      this.searchRows = res.rows; // (the test hook sees the search once it is drawn)
      setStatus('');
    } catch (e) {
      setStatus(`search failed: ${(e as Error).message}`, true);
    }
  }

  private async clearSearch(): Promise<void> {
    this.searchRows = null;
    for (let i = 0; i < this.n; i++) this.pts[i][3] = 1;
    this.lod.opacity = this.baseOpacity;
    const order = this.order && this.ordered ? { pointOrder: drawOrder(this.order, null) } : {};
    this.ordered = false;
    await this.sp.set({
      ...order, opacityBy: null, sizeBy: null, opacity: this.baseOpacity, pointSize: this.basePointSize,
    });
    $('search-result').textContent = '';
    $('search-actions').classList.add('hidden');
    await this.redraw();
  }

  // ------------------------------------------------------------------------------- filters
  private visibleMask(): Uint8Array | null {
    return this.visibleRows;
  }

  private async applyFilters(): Promise<void> {
    const mask = new Uint8Array(this.n).fill(1);
    let active = false;
    for (const box of document.querySelectorAll<HTMLInputElement>('input[data-hide]')) {
      if (!box.checked) continue;
      const desc = this.cols.get(box.dataset.hide!)!;
      const data = await api.column(desc);
      const drop = desc.kind === 'group' ? 2 : 1; // redundant copies / true flags
      for (let i = 0; i < this.n; i++) if (data[i] === drop) mask[i] = 0;
      active = true;
    }
    for (const row of document.querySelectorAll<HTMLElement>('[data-range]')) {
      const [lo, hi] = [...row.querySelectorAll<HTMLInputElement>('input')].map((e) =>
        e.value.trim() === '' ? null : Number(e.value),
      );
      if ((lo === null || Number.isNaN(lo)) && (hi === null || Number.isNaN(hi))) continue;
      const data = await api.column(this.cols.get(row.dataset.range!)!);
      const min = lo ?? -Infinity;
      const max = hi ?? Infinity;
      for (let i = 0; i < this.n; i++) if (data[i] < min || data[i] > max) mask[i] = 0;
      active = true;
    }
    const source = $<HTMLSelectElement>('filter-source');
    if (source && source.value !== '') {
      const data = await api.column(this.cols.get('source')!);
      const code = Number(source.value);
      for (let i = 0; i < this.n; i++) if (data[i] !== code) mask[i] = 0;
      active = true;
    }
    this.unhover();
    if (!active) {
      this.visible = null;
      this.visibleRows = null;
      await this.sp.unfilter();
    } else {
      const rows: number[] = [];
      for (let i = 0; i < this.n; i++) if (mask[i]) rows.push(i);
      this.visible = rows;
      this.visibleRows = mask;
      await this.sp.filter(rows);
    }
    this.updateCounts();
  }

  private updateCounts(): void {
    const shown = this.visible ? this.visible.length : this.n;
    $('shown').textContent =
      shown === this.n ? `${fmt(this.n)} records` : `${fmt(shown)} of ${fmt(this.n)} records shown`;
  }

  // ------------------------------------------------------------------------------- selection and tags
  private onSelect(points: number[]): void {
    this.selection = [...points].sort((a, b) => a - b);
    const k = this.selection.length;
    $('selection-count').textContent = k ? `${fmt(k)} selected` : 'nothing selected';
    for (const id of ['tag-add', 'export-selection', 'clear-selection']) $<HTMLButtonElement>(id).disabled = k === 0;
  }

  private onLabelClick(t: PlacedTopic, ev: MouseEvent): void {
    const desc = this.cols.get(`cluster_${t.level}`);
    if (!desc) return;
    void api.column(desc).then((data) => {
      const code = desc.categories!.indexOf(t.cluster);
      const rows: number[] = [];
      for (let i = 0; i < this.n; i++) if (data[i] === code) rows.push(i);
      if (ev.shiftKey) this.sp.select(rows);
      else void this.sp.zoomToPoints(rows, { padding: 0.3, transition: true, transitionDuration: 400 });
    });
  }

  private async refreshTags(): Promise<void> {
    const list = $('tags');
    try {
      const { tags } = await api.listTags();
      list.replaceChildren();
      if (!tags.length) {
        list.innerHTML = '<div class="hint">no tags yet: select points, name a tag, press Tag</div>';
      }
      for (const t of tags) {
        const row = document.createElement('div');
        row.className = 'tag';
        row.dataset.tag = t.name;
        const name = document.createElement('span');
        name.className = 'tag-name';
        name.textContent = t.name;
        const count = document.createElement('span');
        count.className = 'count';
        count.textContent = fmt(t.count);
        const sel = button('select', 'select the tagged points', async () => {
          const { rows } = await api.tagRows(t.name);
          this.sp.select(rows);
        });
        const exp = document.createElement('a');
        exp.className = 'btn small';
        exp.textContent = 'export';
        exp.href = api.exportTagUrl(t.name);
        exp.download = `${t.name}.jsonl`;
        exp.title = 'download the tagged records as JSONL';
        let armed = false;
        const del = button('×', 'delete this tag (click twice)', async () => {
          if (!armed) {
            armed = true;
            del.textContent = 'delete?';
            setTimeout(() => {
              armed = false;
              del.textContent = '×';
            }, 3000);
            return;
          }
          await api.deleteTag(t.name);
          await this.refreshTags();
        });
        row.append(name, count, sel, exp, del);
        list.append(row);
      }
    } catch (e) {
      setStatus(`could not read tags: ${(e as Error).message}`, true);
    }
  }

  private async tagSelection(): Promise<void> {
    const name = $<HTMLInputElement>('tag-name').value.trim();
    if (!name) {
      setStatus('name the tag first', true);
      $('tag-name').focus();
      return;
    }
    try {
      const res = await api.updateTag(name, this.selection, 'add');
      setStatus(`tagged ${fmt(this.selection.length)} records as “${name}” (${fmt(res.count)} in the tag)`);
      await this.refreshTags();
    } catch (e) {
      setStatus(`tagging failed: ${(e as Error).message}`, true);
    }
  }

  private async exportSelection(): Promise<void> {
    try {
      const name = $<HTMLInputElement>('tag-name').value.trim() || 'selection';
      const blob = await api.exportRows(this.selection, name);
      const a = document.createElement('a');
      a.href = URL.createObjectURL(blob);
      a.download = `${name.replace(/[^A-Za-z0-9._-]+/g, '_')}.jsonl`;
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(a.href), 10_000);
    } catch (e) {
      setStatus(`export failed: ${(e as Error).message}`, true);
    }
  }

  // ------------------------------------------------------------------------------- the panel
  private buildPanel(): void {
    const m = this.meta;
    $('map-name').textContent = m.map.split('/').filter(Boolean).pop() ?? 'map';
    $('map-name').title = `${m.map}\ndataset: ${m.dataset}`;

    // colour by
    const colorSel = $<HTMLSelectElement>('color-by');
    const group = (label: string) => {
      const g = document.createElement('optgroup');
      g.label = label;
      colorSel.append(g);
      return g;
    };
    const add = (g: HTMLElement, value: string, text: string) => {
      const o = document.createElement('option');
      o.value = value;
      o.textContent = text;
      g.append(o);
    };
    const clusters = [...this.cols.values()].filter((c) => c.kind === 'cluster').sort((a, b) => a.level! - b.level!);
    if (clusters.length) {
      const g = group('topics');
      for (const c of clusters) add(g, c.name, `topic, level ${c.level} (${fmt(c.categories!.length)})`);
    }
    const cats = [...this.cols.values()].filter((c) => c.kind === 'category');
    if (cats.length) {
      const g = group('record');
      for (const c of cats) add(g, c.name, c.name);
    }
    const signals = [...this.cols.values()].filter((c) => ['numeric', 'bool', 'group'].includes(c.kind));
    if (signals.length) {
      const g = group('signals');
      for (const c of signals) add(g, c.name, c.kind === 'group' ? `${c.name.replace('_', ' ')} (is redundant)` : c.name.replace('_', ' '));
    }
    colorSel.addEventListener('change', () => void this.setColorBy(colorSel.value));

    // filters
    const filters = $('filters');
    for (const c of this.cols.values()) {
      if (c.kind !== 'group' && c.kind !== 'bool') continue;
      const label = document.createElement('label');
      label.className = 'check';
      const box = document.createElement('input');
      box.type = 'checkbox';
      box.dataset.hide = c.name;
      box.id = `hide-${c.name}`;
      box.addEventListener('change', () => void this.applyFilters());
      const n = c.kind === 'group' ? c.redundant ?? 0 : c.true ?? 0;
      const what = c.kind === 'group' ? `${c.name.replace('_dup', '')} duplicates` : NICE[c.name] ?? c.name.replace(/_/g, ' ');
      label.append(box, document.createTextNode(` hide ${what} `));
      const cnt = document.createElement('span');
      cnt.className = 'count';
      cnt.textContent = fmt(n);
      label.append(cnt);
      filters.append(label);
    }
    for (const c of this.cols.values()) {
      if (c.kind !== 'numeric') continue;
      const row = document.createElement('div');
      row.className = 'range';
      row.dataset.range = c.name;
      const name = document.createElement('span');
      name.textContent = c.name;
      const lo = document.createElement('input');
      const hi = document.createElement('input');
      for (const [inp, which, v] of [
        [lo, 'min', c.min],
        [hi, 'max', c.max],
      ] as const) {
        inp.type = 'number';
        inp.id = `${which}-${c.name}`;
        inp.placeholder = c.integer ? fmt(v ?? 0) : (v ?? 0).toFixed(2);
        inp.step = c.integer ? '1' : '0.01';
        inp.addEventListener('change', () => void this.applyFilters());
      }
      const dash = document.createElement('span');
      dash.textContent = '–';
      row.append(name, lo, dash, hi);
      filters.append(row);
    }
    const source = this.cols.get('source');
    if (source?.categories && source.categories.length > 1) {
      const row = document.createElement('div');
      row.className = 'range';
      const name = document.createElement('span');
      name.textContent = 'source';
      const sel = document.createElement('select');
      sel.id = 'filter-source';
      add(sel, '', 'all sources');
      source.categories.forEach((s, i) => add(sel, String(i), String(s) || '(none)'));
      sel.addEventListener('change', () => void this.applyFilters());
      row.append(name, sel);
      filters.append(row);
    }
    $('reset-filters').addEventListener('click', () => {
      for (const box of filters.querySelectorAll<HTMLInputElement>('input[type=checkbox]')) box.checked = false;
      for (const inp of filters.querySelectorAll<HTMLInputElement>('input[type=number]')) inp.value = '';
      const sel = $<HTMLSelectElement>('filter-source');
      if (sel) sel.value = '';
      void this.applyFilters();
    });

    // search
    const form = $<HTMLFormElement>('search-form');
    form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      void this.runSearch($<HTMLInputElement>('search').value);
    });
    $('search-select').addEventListener('click', () => {
      if (!this.searchRows) return;
      const vis = this.visibleMask();
      this.sp.select(vis ? this.searchRows.filter((r) => vis[r]) : this.searchRows);
    });
    $('search-clear').addEventListener('click', () => {
      $<HTMLInputElement>('search').value = '';
      void this.clearSearch();
    });

    // selection, tags, export
    $('tag-add').addEventListener('click', () => void this.tagSelection());
    $('export-selection').addEventListener('click', () => void this.exportSelection());
    $('clear-selection').addEventListener('click', () => this.sp.deselect());
    $('tag-name').addEventListener('keydown', (ev) => {
      if (ev.key === 'Enter' && this.selection.length) void this.tagSelection();
    });

    // toolbar
    const mode = (m: 'panZoom' | 'lasso') => {
      void this.sp.set({ mouseMode: m });
      $('mode-pan').classList.toggle('active', m === 'panZoom');
      $('mode-lasso').classList.toggle('active', m === 'lasso');
    };
    $('mode-pan').addEventListener('click', () => mode('panZoom'));
    $('mode-lasso').addEventListener('click', () => mode('lasso'));
    $('reset-view').addEventListener('click', () => void this.sp.zoomToOrigin({ transition: true, transitionDuration: 300 }));
    const fitAll = $<HTMLButtonElement>('fit-all');
    if (this.outside > 0) {
      fitAll.textContent = `Fit all (+${fmt(this.outside)})`;
      fitAll.title = `show every point: ${fmt(this.outside)} outlying records lie outside the first view`;
    }
    fitAll.addEventListener('click', () => void this.fitAll(true));
    document.addEventListener('keydown', (ev) => {
      const target = ev.target as HTMLElement;
      if (target.tagName === 'INPUT' || target.tagName === 'SELECT') return;
      if (ev.key === '/') {
        ev.preventDefault();
        $('search').focus();
      } else if (ev.key === 'l') mode('lasso');
      else if (ev.key === 'p') mode('panZoom');
    });
  }

  // ------------------------------------------------------------------------------- hooks for tests
  private installHooks(): void {
    const canvas = $('canvas');
    Object.assign(hooks, {
      n: this.n,
      visibleCount: () => (this.visible ? this.visible.length : this.n),
      selection: () => [...this.selection],
      searchRows: () => (this.searchRows ? [...this.searchRows] : null),
      colorBy: () => this.shownColorBy, // once drawn
      labels: () => {
        const r = canvas.getBoundingClientRect();
        return [...document.querySelectorAll<HTMLElement>('#labels .label')].map((e) => {
          const b = e.getBoundingClientRect();
          return { text: e.textContent, level: Number(e.dataset.level), cluster: Number(e.dataset.cluster),
            left: b.left - r.left, top: b.top - r.top, width: b.width, height: b.height };
        });
      },
      zoom: () => this.zoom(),
      level: () => this.labels.level,
      // per level: the on-screen radius (px) of its typical topic, which picks the level (labels.ts)
      levelRadii: () => this.labels.levelRadii(Math.abs(this.xScale(1) - this.xScale(0))),
      hoverGated: () => this.hoverGated,
      outside: () => this.outside,
      fitAll: async () => {
        await this.fitAll(false);
        await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
        this.updateLabels();
      },
      resetView: async () => {
        await this.sp.zoomToOrigin();
        await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
        this.updateLabels();
      },
      // data coordinates -> page pixels
      toScreen: (x: number, y: number) => {
        const r = canvas.getBoundingClientRect();
        const [nx, ny] = this.norm(x, y);
        return [r.left + this.xScale(nx), r.top + this.yScale(ny)];
      },
      zoomTo: async (x: number, y: number, zoom: number) => {
        await this.sp.zoomToLocation(this.norm(x, y), 1 / zoom);
        await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
        this.updateLabels();
      },
      // pan and zoom on every frame for `ms` milliseconds: the frame rate while the camera moves (on a big map,
      // of the level-of-detail sample)
      animate: (ms: number) =>
        frameLoop(ms, (t) => {
          this.sp.zoomToLocation([0.3 * Math.sin(t * 1.3), 0.3 * Math.cos(t)], 1 / (1.6 + Math.sin(t * 2)));
        }),
      // redraw the unmoved map on every frame: the time of a frame at rest, with every visible point
      redrawLoop: (ms: number) => frameLoop(ms, () => this.sp.redraw()),
      lod: () => this.lod.stats(),
      // draw the level-of-detail sample whatever the camera does (true), or back to normal (false)
      lodForce: (on: boolean) => this.lod.force(on),
      renderer: () => {
        const gl = document.createElement('canvas').getContext('webgl');
        if (!gl) return null;
        const ext = gl.getExtension('WEBGL_debug_renderer_info');
        return ext ? gl.getParameter(ext.UNMASKED_RENDERER_WEBGL) : gl.getParameter(gl.RENDERER);
      },
    });
  }
}

/** Call `step(seconds)` on every animation frame for `ms` ms; the frame rate and frame times (ms). */
function frameLoop(ms: number, step: (t: number) => void): Promise<Record<string, unknown>> {
  return new Promise((resolve) => {
    const times: number[] = [];
    const t0 = performance.now();
    let last = t0;
    const tick = (now: number) => {
      times.push(now - last);
      last = now;
      step((now - t0) / 1000);
      if (now - t0 < ms) requestAnimationFrame(tick);
      else {
        times.shift();
        const sorted = [...times].sort((a, b) => a - b);
        const q = (p: number) => sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))];
        resolve({ frames: times.length, seconds: (now - t0) / 1000, fps: times.length / ((now - t0) / 1000),
          frameMs: { p50: q(0.5), p95: q(0.95), max: sorted[sorted.length - 1] } });
      }
    };
    requestAnimationFrame(tick);
  });
}

function button(text: string, title: string, onClick: () => void | Promise<void>): HTMLButtonElement {
  const b = document.createElement('button');
  b.className = 'btn small';
  b.textContent = text;
  b.title = title;
  b.addEventListener('click', () => {
    Promise.resolve(onClick()).catch((e: Error) => setStatus(e.message, true));
  });
  return b;
}

async function main(): Promise<void> {
  try {
    const [meta, topics] = await Promise.all([api.getMeta(), api.getTopics()]);
    hooks.n = meta.records;
    $('loading-text').textContent = `loading ${fmt(meta.records)} points…`;
    const cols = new Map(meta.columns.map((c) => [c.name, c]));
    mark('meta');
    // the first colour column loads alongside the coordinates (api.column caches the request)
    const colour = cols.get('cluster_0');
    if (colour) void api.column(colour).catch(() => undefined);
    const [xs, ys] = await Promise.all([api.column(cols.get('x')!), api.column(cols.get('y')!)]);
    mark('columns');
    const studio = new Studio(meta, topics.topics, xs, ys);
    mark('points');
    await studio.start();
    mark('ready');
  } catch (e) {
    hooks.error = (e as Error).message;
    $('loading-text').textContent = `could not load the map: ${(e as Error).message}`;
    $('loading').classList.add('error');
  }
}

void main();
