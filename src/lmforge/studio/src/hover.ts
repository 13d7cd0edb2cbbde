// The hover card: a record's text and signals, fetched on demand (points carry no text).

import { getRecord, type RecordResponse } from './api';

const cache = new Map<number, Promise<RecordResponse>>();
const CACHE_MAX = 500;
const TEXT_MAX = 1500;

function fetchRecord(row: number): Promise<RecordResponse> {
  let p = cache.get(row);
  if (!p) {
    p = getRecord(row);
    p.catch(() => cache.delete(row));
    cache.set(row, p);
    if (cache.size > CACHE_MAX) cache.delete(cache.keys().next().value as number);
  }
  return p;
}

function el(tag: string, cls: string, text?: string): HTMLElement {
  const e = document.createElement(tag);
  e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

export class HoverCard {
  private row = -1;
  private timer = 0;

  constructor(
    private card: HTMLElement,
    private topicPath: (point: RecordResponse['point']) => string,
    private onShown: (row: number) => void = () => {},
  ) {}

  show(row: number, x: number, y: number): void {
    this.row = row;
    this.place(x, y);
    window.clearTimeout(this.timer);
    // a short delay so that sweeping the mouse over thousands of points does not fire thousands of requests
    // (short enough that a hover still answers well within 100 ms)
    this.timer = window.setTimeout(() => {
      fetchRecord(row)
        .then((rec) => {
          if (this.row === row) this.render(rec);
        })
        .catch((err: Error) => {
          if (this.row === row) this.card.replaceChildren(el('div', 'error', err.message));
        });
    }, 25);
  }

  place(x: number, y: number): void {
    if (this.row < 0) return;
    const parent = this.card.parentElement!.getBoundingClientRect();
    const w = 380;
    const left = x + 16 + w > parent.width ? x - w - 16 : x + 16;
    this.card.style.left = `${Math.max(4, left)}px`;
    this.card.style.top = `${Math.max(4, Math.min(y + 12, parent.height - 260))}px`;
  }

  hide(): void {
    this.row = -1;
    window.clearTimeout(this.timer);
    this.card.classList.add('hidden');
  }

  private render(rec: RecordResponse): void {
    const p = rec.point;
    const head = el('div', 'card-head');
    head.append(el('span', 'card-id', String(rec.record.id)), el('span', 'card-row', `row ${rec.row}`));
    const sub = el('div', 'card-sub', [rec.record.source, rec.record.split].filter(Boolean).join(' · '));
    const topic = el('div', 'card-topic', this.topicPath(p));
    const badges = el('div', 'card-badges');
    const badge = (text: string, cls = '') => badges.append(el('span', `badge ${cls}`, text));
    if (typeof p.length === 'number') badge(`${p.length.toLocaleString()} chars`);
    if (typeof p.words === 'number') badge(`${p.words.toLocaleString()} words`);
    if (p.short_answer === true) badge('short answer', 'warn');
    if (typeof p.repetition === 'number' && p.repetition >= 0.3) badge(`repetition ${p.repetition.toFixed(2)}`, 'warn');
    for (const name of Object.keys(p)) {
      const g = p[name];
      if (!name.endsWith('_dup') || typeof g !== 'number' || g < 0) continue;
      const what = name.replace('_dup', '');
      badge(g === rec.row ? `${what} dup: kept` : `${what} dup of row ${g}`, g === rec.row ? 'ok' : 'bad');
    }
    const body = el('div', 'card-text');
    if (rec.record.messages) {
      for (const m of rec.record.messages) {
        const turn = el('div', 'turn');
        turn.append(el('span', 'role', `${m.role}: `), document.createTextNode(clip(m.content)));
        body.append(turn);
      }
    } else {
      body.textContent = clip(rec.text);
    }
    this.card.replaceChildren(head, sub, topic, badges, body);
    this.card.classList.remove('hidden');
    this.onShown(rec.row);
  }
}

function clip(text: string): string {
  return text.length > TEXT_MAX ? `${text.slice(0, TEXT_MAX)}…` : text;
}
