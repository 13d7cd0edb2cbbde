// Level of detail for big maps. While the camera moves, only a fixed random sample of the points is drawn;
// once the camera has rested for a moment every point is drawn again. With software WebGL a million points
// cost about a second per frame; a sample of ~120k keeps panning and zooming at several frames per second.
//
// regl-scatterplot (1.16) has no option for this, but it takes a renderer from outside. We build that renderer
// over a regl instance wrapped in a Proxy that catches the one draw command of the ordinary point bodies
// (primitive 'points', globalState 0 = COLOR_NORMAL_IDX) and, in motion, narrows it to the last `budget`
// entries of its index buffer. regl-scatterplot fills that buffer in `pointOrder` with filtered-out points
// left out, and the studio sets `pointOrder` to a seeded random permutation: so those entries are a uniform
// random sample of the visible points, the same one every frame (no flicker), and whatever the studio puts at
// the end of the order (search matches) is always in it. Selected and hovered points are other commands,
// drawn in full; lasso, hover and selection still see every point (only drawing is sampled).

import createREGL from 'regl';
import { createRenderer } from 'regl-scatterplot';

type Fn = (...args: unknown[]) => unknown;
type Spec = { primitive?: string; count?: unknown; offset?: unknown; uniforms?: Record<string, unknown> };

// the extensions regl-scatterplot asks for (its own createRegl), requested only where available
const EXTENSIONS = ['OES_texture_float', 'OES_element_index_uint', 'WEBGL_color_buffer_float', 'EXT_float_blend'];

export interface LodOptions {
  /** points drawn while moving; maps with no more visible points than this are always drawn in full */
  budget: number;
  /** how long the camera must rest before everything is drawn again (ms) */
  idleMs: number;
}

export class Lod {
  budget: number;
  idleMs: number;
  /** the map's base opacity (a number) or null when opacity varies per point (search highlights) */
  opacity: number | null = null;
  /** draw the sample whatever the camera does (tests and benchmarks) */
  forced = false;
  /** the camera's view matrix, read at every frame to notice motion */
  view: () => ArrayLike<number> | null = () => null;
  /** asks the scatterplot for a frame (once the camera rests) */
  redraw: () => void = () => {};

  // stats of the last frame, for the page's test hooks
  hooked = false; // the point-bodies command was found (else nothing is ever sampled)
  sampled = false; // the last frame drew the sample
  total = 0; // points the last frame would draw without sampling (the visible points)
  drawn = 0; // points the last frame drew
  glDrawn = 0; // vertices actually passed to gl.drawArrays by that command (measured, not computed)
  sampledFrames = 0;
  fullFrames = 0;
  firstFrameAt: number | null = null; // when the first frame's points were submitted (ms since navigation)

  private lastMove = -Infinity;
  private once = false;
  private lastView: Float64Array | null = null;
  private timer = 0;
  private inBodies = false;

  constructor({ budget, idleMs }: LodOptions) {
    this.budget = Math.max(0, Math.floor(budget));
    this.idleMs = idleMs;
  }

  /** Something is moving (wheel, drag, lasso): sample the frames for a while. */
  moved(): void {
    this.lastMove = performance.now();
  }

  /** Sample the next frame only, then draw everything at once (the first paint: the sample first). */
  sampleNext(): void {
    this.once = true;
  }

  /** The renderer for createScatterplot({ renderer }); its canvas is sized with `resize(width, height)`. */
  createRenderer(): ReturnType<typeof createRenderer> {
    const canvas = document.createElement('canvas');
    // No multisampling: the points are drawn into a float framebuffer, and the default framebuffer only
    // receives one full-screen triangle, so MSAA there smooths nothing and costs a 4x-sampled resolve
    // per frame in software GL. regl-scatterplot's own renderer asks for it.
    const gl = canvas.getContext('webgl', { antialias: false, preserveDrawingBuffer: true });
    if (!gl) throw new Error('this browser has no WebGL');
    const extensions = EXTENSIONS.filter((e) => gl.getExtension(e));
    const drawArrays = gl.drawArrays.bind(gl);
    gl.drawArrays = (mode: number, first: number, count: number) => {
      if (this.inBodies) this.glDrawn += count;
      drawArrays(mode, first, count);
    };
    const regl = createREGL({ gl, extensions });
    const proxy = new Proxy(regl, {
      apply: (target, thisArg, args: unknown[]) => {
        const spec = args[0] as Spec | undefined;
        const isBodies =
          spec?.primitive === 'points' && spec.uniforms?.globalState === 0 && typeof spec.count === 'function';
        return isBodies ? this.wrap(target as unknown as Fn, spec) : Reflect.apply(target, thisArg, args);
      },
    });
    return createRenderer({ regl: proxy, canvas });
  }

  /** The point-bodies command, narrowed to the sample in motion. */
  private wrap(regl: Fn, spec: Spec): Fn {
    this.hooked = true;
    const count = spec.count as Fn;
    const u = spec.uniforms!;
    const opMax = u.pointOpacityMax as Fn;
    const opScale = u.pointOpacityScale as Fn;
    const cmd = regl({
      ...spec,
      count: () => this.drawn,
      offset: () => this.total - this.drawn, // the last entries: the sample, priority points included
      uniforms: {
        ...u,
        // the sample is drawn more opaque so that dense regions keep the coverage they have in full: k
        // overlapping points of opacity a cover 1-(1-a)^k; the sample has k·drawn/total of them, and opacity
        // a' = 1-(1-a)^(total/drawn) gives them the same coverage (capped at 1 through pointOpacityMax)
        pointOpacityMax: (...a: unknown[]) => {
          const m = opMax(...a) as number;
          const s = this.boost();
          return s === 1 ? m : Math.min(m, 1 / (s * (opScale(...a) as number)));
        },
        pointOpacityScale: (...a: unknown[]) => (opScale(...a) as number) * this.boost(),
      },
    }) as Fn;
    return (...args: unknown[]) => {
      this.begin(count() as number);
      this.inBodies = true;
      this.glDrawn = 0;
      try {
        return cmd(...args);
      } finally {
        this.inBodies = false;
        if (this.sampled) this.sampledFrames++;
        else this.fullFrames++;
      }
    };
  }

  private boost(): number {
    if (!this.sampled || this.opacity === null || this.opacity <= 0 || this.opacity >= 1) return 1;
    const a = this.opacity;
    return (1 - (1 - a) ** (this.total / this.drawn)) / a;
  }

  /** Decide this frame: the sample while the camera moves (or just moved), everything at rest. */
  private begin(total: number): void {
    const now = performance.now();
    this.firstFrameAt ??= now;
    const once = this.once;
    this.once = false;
    const v = this.view();
    if (v) {
      let changed = !this.lastView;
      if (this.lastView) for (let i = 0; i < v.length; i++) changed ||= v[i] !== this.lastView[i];
      if (changed) {
        if (this.lastView) this.lastMove = now; // (the very first frame is no motion)
        this.lastView = Float64Array.from(v);
      }
    }
    const moving = this.forced || once || now - this.lastMove < this.idleMs;
    this.total = total;
    this.sampled = moving && this.budget > 0 && total > this.budget;
    this.drawn = this.sampled ? this.budget : total;
    if (this.sampled && !this.forced) this.scheduleRest();
  }

  /** One frame in full once the camera has rested for idleMs. */
  private scheduleRest(): void {
    if (this.timer) return;
    const wait = Math.max(0, this.lastMove + this.idleMs - performance.now());
    this.timer = window.setTimeout(() => {
      this.timer = 0;
      if (performance.now() - this.lastMove >= this.idleMs) this.redraw();
      else this.scheduleRest();
    }, wait + 1);
  }

  /** Force the sample on or off (tests, benchmarks); redraws. */
  force(on: boolean): void {
    this.forced = on;
    if (!on) this.lastMove = -Infinity;
    this.redraw();
  }

  stats(): Record<string, unknown> {
    return {
      budget: this.budget, idleMs: this.idleMs, hooked: this.hooked, sampled: this.sampled, total: this.total,
      drawn: this.drawn, glDrawn: this.glDrawn, sampledFrames: this.sampledFrames, fullFrames: this.fullFrames,
    };
  }
}

/** A seeded random permutation of 0..n-1 (mulberry32 + Fisher–Yates). */
export function permutation(n: number, seed: number): Int32Array {
  let s = seed >>> 0;
  const rand = () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const p = new Int32Array(n);
  for (let i = 0; i < n; i++) p[i] = i;
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    const t = p[i];
    p[i] = p[j];
    p[j] = t;
  }
  return p;
}

/** The draw order: the permutation with `last` (e.g. search matches) moved to the end, in permuted order. */
export function drawOrder(perm: Int32Array, last: readonly number[] | null): number[] {
  if (!last || !last.length) return Array.from(perm);
  const mark = new Uint8Array(perm.length);
  for (const r of last) if (r >= 0 && r < perm.length) mark[r] = 1;
  const head: number[] = [];
  const tail: number[] = [];
  for (let i = 0; i < perm.length; i++) (mark[perm[i]] ? tail : head).push(perm[i]);
  return head.concat(tail);
}
