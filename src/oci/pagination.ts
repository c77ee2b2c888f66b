import { RegistryError } from './errors.ts';

/**
 * Pagination of the catalog and of tag lists, as the distribution spec describes it: the result
 * is a lexically sorted list; `last` names the entry after which a page starts, `n` how many it
 * holds at most; a `Link: <...>; rel="next"` header says there is more and where it is.
 */

/** The most entries one page holds, whatever `n` asks for: a client asking for more gets this many and a Link. */
export const MAX_PAGE_ENTRIES = 1000;

export type PageQuery = {
  /** Undefined: the caller's default (everything, for a tag list). */
  n: number | undefined;
  last: string | undefined;
};

export type Page = {
  items: string[];
  /** Where the next page starts; undefined on the last page. */
  next: { n: number; last: string } | undefined;
};

/**
 * Read `n` and `last` from a request's query. An empty `n` counts as absent (distribution does
 * the same); anything but a decimal number is PAGINATION_NUMBER_INVALID; above
 * MAX_PAGE_ENTRIES it is lowered to that.
 *
 * @example parsePageQuery({ n: '2', last: 'b' }) // { n: 2, last: 'b' }
 */
export function parsePageQuery(raw: { n?: string | undefined; last?: string | undefined }): PageQuery {
  const last = raw.last === undefined || raw.last === '' ? undefined : raw.last;
  if (raw.n === undefined || raw.n === '') return { n: undefined, last };
  if (!/^\d{1,16}$/.test(raw.n)) throw new RegistryError('PAGINATION_NUMBER_INVALID', { detail: { n: raw.n.slice(0, 32) } });
  return { n: Math.min(Number(raw.n), MAX_PAGE_ENTRIES), last };
}

/** Byte order, which is what "lexically" means for the ASCII names and tags the grammar allows (never locale order). */
export function lexically(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/**
 * One page of `sorted` (lexically sorted, no duplicates): the entries after `q.last`, at most
 * `q.n` of them (`defaultN` when the query has no n; undefined: all). `next` is set only when
 * entries remain, so a client following Link headers stops on the page that ends the list.
 *
 * @example paginate(['a', 'b', 'c'], { n: 2, last: undefined }) // { items: ['a', 'b'], next: { n: 2, last: 'b' } }
 */
export function paginate(sorted: readonly string[], q: PageQuery, defaultN?: number): Page {
  const start = q.last === undefined ? 0 : firstAfter(sorted, q.last);
  const n = q.n ?? defaultN ?? sorted.length;
  const items = sorted.slice(start, start + n);
  const lastItem = items.at(-1);
  const more = start + n < sorted.length && lastItem !== undefined;
  return { items, next: more ? { n, last: lastItem } : undefined };
}

/** Index of the first entry lexically after `last` (binary search: the catalog may be long). */
function firstAfter(sorted: readonly string[], last: string): number {
  let lo = 0;
  let hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (lexically(sorted[mid] ?? '', last) <= 0) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/**
 * The Link header value for the next page: relative to this server, as distribution sends it
 * (`</v2/_catalog?last=b&n=2>; rel="next"`). `keep` adds query parameters the next request needs
 * to reach the same place (containerd's `ns`).
 */
export function nextLink(path: string, next: { n: number; last: string }, keep: Record<string, string | undefined> = {}): string {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(keep)) if (v !== undefined) q.set(k, v);
  q.set('last', next.last);
  q.set('n', String(next.n));
  return `<${path}?${q.toString()}>; rel="next"`;
}
