// The studio's HTTP API (served by lmforge/serve/studio.py). Point columns arrive as raw typed arrays.

export type Kind = 'coord' | 'cluster' | 'category' | 'bool' | 'group' | 'numeric';

export interface ColumnDesc {
  name: string;
  kind: Kind;
  dtype: 'float32' | 'int32' | 'uint8' | 'uint16';
  level?: number;
  categories?: (string | number)[];
  min?: number;
  max?: number;
  integer?: boolean;
  true?: number;
  redundant?: number;
  groups?: number;
}

export interface Meta {
  map: string;
  dataset: string;
  records: number;
  levels: number;
  embedding?: { model?: string; dim?: number };
  columns: ColumnDesc[];
}

export interface Topic {
  level: number;
  cluster: number;
  parent: number | null;
  label: string;
  keywords: string[];
  size: number;
  x: number;
  y: number;
  radius?: number; // (served) median distance of the topic's points to (x, y), in map units
  display?: string; // (served) the label made distinct among siblings
}

export interface RecordResponse {
  row: number;
  text: string;
  record: { id: string; text?: string; messages?: { role: string; content: string }[]; source?: string; split?: string };
  point: Record<string, string | number | boolean | null>;
}

export interface SearchResponse {
  query: string;
  count: number;
  truncated: boolean;
  rows: number[];
}

export interface TagInfo {
  name: string;
  ids: number;
  count: number;
}

export type Column = Float32Array | Int32Array | Uint8Array | Uint16Array;

async function check(r: Response): Promise<Response> {
  if (!r.ok) {
    let detail = `${r.status} ${r.statusText}`;
    try {
      const body = await r.json();
      if (typeof body.detail === 'string') detail = body.detail;
    } catch {
      /* not JSON */
    }
    throw new Error(detail);
  }
  return r;
}

async function json<T>(url: string, init?: RequestInit): Promise<T> {
  return (await check(await fetch(url, init))).json() as Promise<T>;
}

const post = (body: unknown): RequestInit => ({
  method: 'POST',
  headers: { 'Content-Type': 'application/json' },
  body: JSON.stringify(body),
});

export const getMeta = () => json<Meta>('api/meta');
export const getTopics = () => json<{ levels: number; topics: Topic[] }>('api/topics');
export const getRecord = (row: number) => json<RecordResponse>(`api/record/${row}`);
export const search = (q: string) => json<SearchResponse>(`api/search?q=${encodeURIComponent(q)}`);
export const listTags = () => json<{ tags: TagInfo[] }>('api/tags');
export const tagRows = (name: string) => json<{ name: string; rows: number[] }>(`api/tags/${encodeURIComponent(name)}`);
export const updateTag = (name: string, rows: number[], mode: 'add' | 'replace' | 'remove' = 'add') =>
  json<{ name: string; count: number }>(`api/tags/${encodeURIComponent(name)}`, post({ rows, mode }));
export const deleteTag = (name: string) => json(`api/tags/${encodeURIComponent(name)}`, { method: 'DELETE' });
export const exportTagUrl = (name: string) => `api/export?tag=${encodeURIComponent(name)}`;

export async function exportRows(rows: number[], name: string): Promise<Blob> {
  return (await check(await fetch('api/export', post({ rows, name })))).blob();
}

const columnCache = new Map<string, Promise<Column>>();

/** One point column as a typed array, fetched once. */
export function column(desc: ColumnDesc): Promise<Column> {
  let p = columnCache.get(desc.name);
  if (!p) {
    p = fetch(`api/column/${encodeURIComponent(desc.name)}`)
      .then(check)
      .then((r) => r.arrayBuffer())
      .then((buf) => {
        switch (desc.dtype) {
          case 'float32':
            return new Float32Array(buf);
          case 'int32':
            return new Int32Array(buf);
          case 'uint16':
            return new Uint16Array(buf);
          default:
            return new Uint8Array(buf);
        }
      });
    columnCache.set(desc.name, p);
  }
  return p;
}
