// The hovered point on its own layer. regl-scatterplot shows a hovered point by redrawing every point (at a
// million points in software GL about a second per hover), so the studio turns its hover off and does it
// here: the point under the cursor is found in the spatial index regl-scatterplot already built (KDBush,
// over the normalised coordinates), and only that point is drawn, on a 2-D canvas over the map.

import createKDBushClass from 'regl-scatterplot/src/kdbush-class.js';
import type { LinearScale } from './scale';

interface KDBush {
  range(minX: number, minY: number, maxX: number, maxY: number): number[];
}
const KDBushClass = createKDBushClass() as { from(data: ArrayBuffer): KDBush };

/**
 * Run `create` (which builds the scatterplot) so that regl-scatterplot's own window mousemove listener only
 * sees moves with a button pressed (pans and lassos: it must redraw for those) and never a plain hover. It
 * registers that listener last, after its camera's (which keeps every move). True when it was found.
 */
export function withoutBuiltinHover<T>(create: () => T): { result: T; gated: boolean } {
  const added: [EventListenerOrEventListenerObject, boolean | AddEventListenerOptions | undefined][] = [];
  const add = window.addEventListener;
  window.addEventListener = function (this: Window, type: string, fn: EventListenerOrEventListenerObject | null, opts?: boolean | AddEventListenerOptions) {
    if (type === 'mousemove' && fn) added.push([fn, opts]);
    return add.call(this, type, fn as EventListenerOrEventListenerObject, opts);
  } as typeof window.addEventListener;
  let result: T;
  try {
    result = create();
  } finally {
    window.addEventListener = add;
  }
  const last = added[added.length - 1];
  if (added.length < 2 || typeof last[0] !== 'function') return { result, gated: false };
  const [fn, opts] = last as [(ev: MouseEvent) => void, boolean | AddEventListenerOptions | undefined];
  window.removeEventListener('mousemove', fn, opts);
  window.addEventListener('mousemove', (ev) => ev.buttons && fn(ev), opts);
  return { result, gated: true };
}

export class PointerLayer {
  private index: KDBush | null = null;
  private ctx: CanvasRenderingContext2D;
  private dpr = 1;
  /** the hovered row, or -1 */
  row = -1;

  constructor(
    private canvas: HTMLCanvasElement,
    private pts: number[][], // normalised [x, y, ...] per row, as drawn
  ) {
    this.ctx = canvas.getContext('2d')!;
  }

  setIndex(data: ArrayBuffer | undefined): void {
    this.index = data ? KDBushClass.from(data) : null;
  }

  resize(width: number, height: number): void {
    this.dpr = window.devicePixelRatio || 1;
    this.canvas.width = Math.round(width * this.dpr);
    this.canvas.height = Math.round(height * this.dpr);
    this.canvas.style.width = `${width}px`;
    this.canvas.style.height = `${height}px`;
    this.draw(null, null, 0);
  }

  /** The visible row nearest canvas pixel (x, y) within `radius` pixels, or -1. */
  find(x: number, y: number, xs: LinearScale, ys: LinearScale, radius: number, visible: Uint8Array | null): number {
    if (!this.index) return -1;
    const nx = xs.invert(x);
    const ny = ys.invert(y);
    const rx = Math.abs(xs.invert(x + radius) - nx);
    const ry = Math.abs(ys.invert(y + radius) - ny);
    let best = -1;
    let bestD = 1;
    for (const i of this.index.range(nx - rx, ny - ry, nx + rx, ny + ry)) {
      if (visible && !visible[i]) continue;
      const d = ((this.pts[i][0] - nx) / rx) ** 2 + ((this.pts[i][1] - ny) / ry) ** 2; // < 1: inside the disc
      if (d < bestD) {
        bestD = d;
        best = i;
      }
    }
    return best;
  }

  /** Draw row's highlight (or clear the layer: row -1). */
  draw(xs: LinearScale | null, ys: LinearScale | null, size: number, row = -1, color = '#ffffff'): void {
    const c = this.ctx;
    c.setTransform(this.dpr, 0, 0, this.dpr, 0, 0);
    c.clearRect(0, 0, this.canvas.width, this.canvas.height);
    this.row = row;
    if (row < 0 || !xs || !ys) return;
    const px = xs(this.pts[row][0]);
    const py = ys(this.pts[row][1]);
    const r = Math.max(3, size / 2 + 2);
    c.beginPath();
    c.arc(px, py, r + 2, 0, 2 * Math.PI);
    c.fillStyle = '#0e1116';
    c.fill();
    c.beginPath();
    c.arc(px, py, r, 0, 2 * Math.PI);
    c.fillStyle = color;
    c.fill();
    c.lineWidth = 1.5;
    c.strokeStyle = '#ffffff';
    c.stroke();
  }
}
