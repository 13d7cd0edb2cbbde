// Topic labels floating over their clusters. The zoom picks the level (coarse topics when zoomed out, finer
// ones as you zoom in); within a level, bigger topics claim their place first and a label that would
// overlap one already placed is left out.

import type { Topic } from './api';
import type { LinearScale } from './scale';

export interface PlacedTopic extends Topic {
  nx: number; // normalised to the scatter's [-1, 1] coordinates
  ny: number;
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

/** The topic level shown at a zoom factor (1 = the whole map): level k from zoom 2.5 * 2.4^(k-1). */
export function levelForZoom(zoom: number, levels: number): number {
  let level = 0;
  for (let k = 1; k < levels; k++) {
    if (zoom >= 2.5 * 2.4 ** (k - 1)) level = k;
  }
  return level;
}

export function shortLabel(label: string, max = 42): string {
  const kws = label.split(',').map((s) => s.trim()).filter(Boolean).slice(0, 3).join(', ');
  return kws.length > max ? `${kws.slice(0, max - 1)}…` : kws;
}

export class LabelLayer {
  private nodes = new Map<string, HTMLDivElement>();
  private byLevel: PlacedTopic[][] = [];
  private measure = document.createElement('canvas').getContext('2d')!;
  private widths = new Map<string, number>();
  placed: LabelBox[] = [];
  level = 0;

  constructor(
    private root: HTMLElement,
    topics: PlacedTopic[],
    private levels: number,
  ) {
    for (const t of topics) {
      (this.byLevel[t.level] ??= []).push(t);
    }
    for (const list of this.byLevel) list?.sort((a, b) => b.size - a.size);
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

  update(xScale: LinearScale, yScale: LinearScale, width: number, height: number, zoom: number): void {
    this.level = levelForZoom(zoom, Math.max(1, this.levels));
    const candidates = this.byLevel[this.level] ?? [];
    const placed: LabelBox[] = [];
    const h = this.level === 0 ? 22 : 19;
    for (const t of candidates) {
      if (placed.length >= MAX_LABELS) break;
      const cx = xScale(t.nx);
      const cy = yScale(t.ny);
      const text = shortLabel(t.label);
      const w = this.width(text, this.level);
      const box = { text, level: t.level, cluster: t.cluster, left: cx - w / 2, top: cy - h / 2, width: w, height: h };
      if (box.left < 0 || box.top < 0 || box.left + w > width || box.top + h > height) continue;
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
        node.title = `${topic.label} (${topic.size.toLocaleString()} records)`;
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
