// Column statistics the page needs: quantiles (colour ramps, legends) and the robust extent of the map.

import type { Column } from './api';

/** q+1 evenly spaced quantiles of a column (from a strided sample of at most 200k values). */
export function quantiles(data: ArrayLike<number>, q: number): number[] {
  const step = Math.max(1, Math.floor(data.length / 200_000));
  const sample: number[] = [];
  for (let i = 0; i < data.length; i += step) if (Number.isFinite(data[i])) sample.push(data[i]);
  sample.sort((a, b) => a - b);
  if (!sample.length) return new Array(q + 1).fill(0);
  return Array.from({ length: q + 1 }, (_, k) => sample[Math.min(sample.length - 1, Math.floor((k / q) * (sample.length - 1)))]);
}

/** A value's rank position in [0, 1] by binary search over the quantile table. */
export function quantileOf(q: number[], v: number): number {
  if (!(v > q[0])) return 0;
  if (v >= q[q.length - 1]) return 1;
  let lo = 0;
  let hi = q.length - 1;
  while (hi - lo > 1) {
    const mid = (lo + hi) >> 1;
    if (q[mid] <= v) lo = mid;
    else hi = mid;
  }
  return (lo + (v - q[lo]) / (q[hi] - q[lo] || 1)) / (q.length - 1);
}

export interface Box {
  x0: number;
  x1: number;
  y0: number;
  y1: number;
}

// Tukey's "far out" fences: a point beyond 3 interquartile ranges from the quartiles (on x or y) is an
// outlier. UMAP puts records unlike everything else (empty files, binary blobs) in small far islands; a view
// fitted to them squeezes the map into a corner. Gaussian-like blobs lose nothing at 3 IQR.
const FENCE_IQR = 3;

/** The extent of every finite point (`all`), the extent of the points within the fences (`inner`), and how
 * many points lie outside `inner`. */
export function robustBox(xs: Column, ys: Column): { all: Box; inner: Box; outside: number } {
  const fence = (v: Column): [number, number] => {
    const [, q1, , q3] = quantiles(v, 4);
    const iqr = q3 - q1;
    return [q1 - FENCE_IQR * iqr, q3 + FENCE_IQR * iqr];
  };
  const [fx0, fx1] = fence(xs);
  const [fy0, fy1] = fence(ys);
  const all = { x0: Infinity, x1: -Infinity, y0: Infinity, y1: -Infinity };
  const inner = { ...all };
  let outside = 0;
  for (let i = 0; i < xs.length; i++) {
    const x = xs[i];
    const y = ys[i];
    if (!Number.isFinite(x) || !Number.isFinite(y)) continue;
    grow(all, x, y);
    if (x >= fx0 && x <= fx1 && y >= fy0 && y <= fy1) grow(inner, x, y);
    else outside++;
  }
  if (!(all.x0 <= all.x1)) Object.assign(all, { x0: -1, x1: 1, y0: -1, y1: 1 });
  if (!(inner.x0 <= inner.x1)) Object.assign(inner, all);
  return { all, inner, outside };
}

function grow(b: Box, x: number, y: number): void {
  if (x < b.x0) b.x0 = x;
  if (x > b.x1) b.x1 = x;
  if (y < b.y0) b.y0 = y;
  if (y > b.y1) b.y1 = y;
}
