// Colour maps: a categorical palette that stretches to any number of categories, a perceptual ramp for
// numbers, and fixed colours for flags and duplicate status.

const BASE = [
  '#4e79a7', '#f28e2b', '#e15759', '#76b7b2', '#59a14f', '#edc948', '#b07aa1', '#ff9da7', '#9c755f', '#bab0ac',
  '#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b', '#e377c2', '#17becf', '#bcbd22', '#aec7e8',
];

function hsl(h: number, s: number, l: number): string {
  const a = s * Math.min(l, 1 - l);
  const f = (n: number) => {
    const k = (n + h / 30) % 12;
    const c = l - a * Math.max(-1, Math.min(k - 3, 9 - k, 1));
    return Math.round(255 * c).toString(16).padStart(2, '0');
  };
  return `#${f(0)}${f(8)}${f(4)}`;
}

/** n distinct-ish colours: a hand-picked 20, then golden-angle hues. */
export function categorical(n: number): string[] {
  const out: string[] = [];
  for (let i = 0; i < n; i++) {
    out.push(i < BASE.length ? BASE[i] : hsl((i * 137.508) % 360, 0.62, 0.5 + 0.12 * ((i % 3) - 1)));
  }
  return out.length ? out : [BASE[0]];
}

// viridis, sampled at 9 stops
const VIRIDIS = [
  [68, 1, 84], [72, 40, 120], [62, 74, 137], [49, 104, 142], [38, 130, 142],
  [31, 158, 137], [53, 183, 121], [109, 205, 89], [180, 222, 44], [253, 231, 37],
];

export function ramp(n = 64): string[] {
  const out: string[] = [];
  for (let i = 0; i < n; i++) {
    const t = (i / (n - 1)) * (VIRIDIS.length - 1);
    const k = Math.min(VIRIDIS.length - 2, Math.floor(t));
    const f = t - k;
    const c = VIRIDIS[k].map((v, j) => Math.round(v + (VIRIDIS[k + 1][j] - v) * f));
    out.push(`#${c.map((v) => v.toString(16).padStart(2, '0')).join('')}`);
  }
  return out;
}

export const RAMP_CSS = `linear-gradient(to right, ${ramp(9).join(', ')})`;
export const BOOL_COLORS = ['#5b6b82', '#ff8c42'];
export const GROUP_COLORS = ['#5b6b82', '#4cc38a', '#ff5d5d']; // no group, kept, redundant
export const GROUP_NAMES = ['no duplicate', 'kept (first of its group)', 'redundant copy'];
