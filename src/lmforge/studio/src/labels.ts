// Topic labels floating over their clusters. The zoom picks the level: the finest one whose topics are big
// enough on screen to carry a label over their own points (coarse topics when zoomed out, finer ones as you
// zoom in). Within a level, bigger topics claim their place first and a label that would overlap one already
// placed is left out. A topic smaller on screen than its label gets the label just above its points, so that
// it never hides them.

import type { Topic } from './api';
import type { LinearScale } from './scale';

export interface PlacedTopic extends Topic {
  nx: number; // normalised to the scatter's coordinates
  ny: number;
  nr: number; // `radius`, in the same units
}

export interface LabelBox {
  text: string;
  level: number;
  cluster: number;
  left: number;
  top: number;
  width: number;
  height: number;
}

const FONTS = ['600 15px system-ui, sans-serif', '500 13px system-ui, sans-serif', '500 12px system-ui, sans-serif'];
const MAX_LABELS = 80;
const PAD = 4;
// A level comes in when the topic of a typical record (the size-weighted median) has half its points within
// this many pixels of its centre: a disc ~90 px across, about the width of a short label, so the label sits
// over its own points rather than over its neighbours'. (The standard library's map: level 1 in the first
// view, level 2 from zoom 1.8, level 0 when zoomed out; the test fixture's blobs: level 1 from 1.75.)
export const LEVEL_RADIUS_PX = 45;

/** The finest level whose typical topic radius (normalised units, per level) is at least LEVEL_RADIUS_PX
 * pixels at `pxPerUnit` pixels per normalised unit; level 0 when none is. */
export function levelForScreen(radii: number[], pxPerUnit: number): number {
  let level = 0;
  radii.forEach((r, k) => {
    if (r * pxPerUnit >= LEVEL_RADIUS_PX) level = k;
  });
  return level;
}

export function shortLabel(label: string, max = 42): string {
  const kws = label.split(',').map((s) => s.trim()).filter(Boolean).slice(0, 3).join(', ');
  return kws.length > max ? `${kws.slice(0, max - 1)}…` : kws;
}

/** The text a topic is shown with: the server's sibling-distinct label where it sent one. */
export function topicText(t: Topic, max = 42): string {
  return shortLabel(t.display ?? t.label, max);
}

function weightedMedian(values: number[], weights: number[]): number {
  const order = values.map((_, i) => i).sort((a, b) => values[a] - values[b]);
  const half = weights.reduce((s, w) => s + w, 0) / 2;
  let acc = 0;
  for (const i of order) {
    acc += weights[i];
    if (acc >= half) return values[i];
  }
  return 0;
}

export class LabelLayer {
  private nodes = new Map<string, HTMLDivElement>();
  private byLevel: PlacedTopic[][] = [];
  private measure = document.createElement('canvas').getContext('2d')!;
  private widths = new Map<string, number>();
  private radii: number[] = []; // per level: the size-weighted median topic radius (normalised units)
  placed: LabelBox[] = [];
  level = 0;

  constructor(
    private root: HTMLElement,
    topics: PlacedTopic[],
    levels: number,
  ) {
    for (const t of topics) {
      (this.byLevel[t.level] ??= []).push(t);
    }
    for (const list of this.byLevel) list?.sort((a, b) => b.size - a.size);
    for (let k = 0; k < Math.max(1, levels); k++) {
      const list = this.byLevel[k] ?? [];
      this.radii[k] = weightedMedian(list.map((t) => t.nr), list.map((t) => t.size));
    }
  }

  /** Per level, the on-screen radius (px) of its typical topic at `pxPerUnit`. */
  levelRadii(pxPerUnit: number): number[] {
    return this.radii.map((r) => r * pxPerUnit);
  }

  private width(text: string, level: number): number {
    const key = `${level}\u0000${text}`;
    let w = this.widths.get(key);
    if (w === undefined) {
      this.measure.font = FONTS[Math.min(level, FONTS.length - 1)];
      w = Math.ceil(this.measure.measureText(text).width) + 2 * PAD;
      this.widths.set(key, w);
    }
    return w;
  }

  /** The topic whose label covers canvas point (x, y), if any. Labels take no pointer events themselves, so
   * the map under them still pans, zooms and hovers; the studio asks here on click. */
  hit(x: number, y: number): PlacedTopic | null {
    const box = this.placed.find((b) => x >= b.left && x <= b.left + b.width && y >= b.top && y <= b.top + b.height);
    if (!box) return null;
    return (this.byLevel[box.level] ?? []).find((t) => t.cluster === box.cluster) ?? null;
  }

  /** Mark the label under the pointer; true when there is one. */
  pointAt(x: number, y: number): boolean {
    const hot = this.hit(x, y);
    for (const [key, node] of this.nodes) node.classList.toggle('hot', hot !== null && key === `${hot.level}:${hot.cluster}`);
    return hot !== null;
  }

  /** Place the labels for the current view; `pointSize` is the drawn point diameter (px). */
  update(xScale: LinearScale, yScale: LinearScale, width: number, height: number, pointSize: number): void {
    const ppu = Math.abs(xScale(1) - xScale(0));
    this.level = levelForScreen(this.radii, ppu);
    const candidates = this.byLevel[this.level] ?? [];
    const placed: LabelBox[] = [];
    const h = this.level === 0 ? 22 : 19;
    for (const t of candidates) {
      if (placed.length >= MAX_LABELS) break;
      const cx = xScale(t.nx);
      const cy = yScale(t.ny);
      const r = t.nr * ppu;
      if (cx < 0 || cx > width || cy < 0 || cy > height) continue; // its points are (mostly) off screen
      const text = topicText(t);
      const w = this.width(text, this.level);
      // over its points when they are wider than the label is tall, else just above them
      const top = r >= h ? cy - h / 2 : cy - Math.max(r, pointSize / 2) - 3 - h;
      // (a label whose topic is on screen but near an edge is moved in rather than dropped)
      const left = Math.min(Math.max(cx - w / 2, 0), width - w);
      const box = { text, level: t.level, cluster: t.cluster, left, top, width: w, height: h };
      if (box.left < 0 || box.top < 0 || box.top + h > height) continue;
      if (placed.some((p) => overlaps(p, box))) continue;
      placed.push(box);
    }
    this.render(placed, candidates);
    this.placed = placed;
  }

  private render(placed: LabelBox[], candidates: PlacedTopic[]): void {
    const keep = new Set<string>();
    const topicOf = new Map(candidates.map((t) => [t.cluster, t]));
    for (const box of placed) {
      const key = `${box.level}:${box.cluster}`;
      keep.add(key);
      let node = this.nodes.get(key);
      if (!node) {
        node = document.createElement('div');
        node.className = `label level-${Math.min(box.level, 2)}`;
        node.textContent = box.text;
        node.dataset.level = String(box.level);
        node.dataset.cluster = String(box.cluster);
        const topic = topicOf.get(box.cluster)!;
        node.title = `${topic.display ?? topic.label} (${topic.size.toLocaleString()} records)`;
        this.root.appendChild(node);
        this.nodes.set(key, node);
      }
      node.style.transform = `translate(${Math.round(box.left)}px, ${Math.round(box.top)}px)`;
      node.style.width = `${box.width}px`;
    }
    for (const [key, node] of this.nodes) {
      if (!keep.has(key)) {
        node.remove();
        this.nodes.delete(key);
      }
    }
  }
}

function overlaps(a: LabelBox, b: LabelBox): boolean {
  return a.left < b.left + b.width && b.left < a.left + a.width && a.top < b.top + b.height && b.top < a.top + a.height;
}
