import type { Digest } from '../oci/digest.ts';
import { lexically } from '../oci/pagination.ts';
import type { ContentCache } from './content-cache.ts';
import type { ContentEntry, TagRecord } from './index-store.ts';

/** A repository the cache holds something of, under the name clients use for it. */
export type CachedRepository = {
  /** What a client puts in a path: `library/alpine`, `ghcr.io/org/app`. */
  name: string;
  upstream: string;
  /** As the upstream knows it. */
  repo: string;
  /** Something of it was fetched with a client's own credential and not found public since. */
  restricted: boolean;
};

/** A tag whose manifest is in the cache. */
export type CachedTag = { tag: string; digest: Digest; mediaType: string; size: number; checkedAt: number; restricted: boolean };

/** The client's name for an upstream's repository; undefined when no path leads there (it is not listed then). */
export type ClientNaming = (upstream: string, repo: string) => string | undefined;

export type CatalogSource = {
  entries: Iterable<Pick<ContentEntry, 'upstream' | 'repo' | 'restricted'>>;
  tags: AsyncIterable<TagRecord> | Iterable<TagRecord>;
  /** Whether the object with this digest is in the cache now. */
  isCached: (digest: Digest) => boolean;
  naming: ClientNaming;
};

type Tally = { upstream: string; repo: string; listed: boolean; restricted: boolean };

/**
 * The repositories in the cache, sorted by client name. A repository is listed when the cache
 * holds an object fetched for it, or a tag of it whose manifest is still cached (an object
 * records only the first repository that fetched it, so an image shared by two repositories is
 * found through the second one's tags). A tag record left behind by an evicted manifest does not
 * list a repository. It is restricted when anything Gantry holds of it, objects or tag records,
 * is: one restricted record is enough to keep its name from those who may not see it.
 */
export async function repositoriesOf(source: CatalogSource): Promise<CachedRepository[]> {
  const tallies = new Map<string, Tally>();
  const tally = (upstream: string, repo: string): Tally => {
    const key = `${upstream}\u0000${repo}`;
    let t = tallies.get(key);
    if (!t) tallies.set(key, (t = { upstream, repo, listed: false, restricted: false }));
    return t;
  };
  for (const e of source.entries) {
    const t = tally(e.upstream, e.repo);
    t.listed = true;
    t.restricted ||= e.restricted === true;
  }
  for await (const r of source.tags) {
    const t = tally(r.upstream, r.repo);
    t.listed ||= source.isCached(r.entry.digest);
    t.restricted ||= r.entry.restricted === true;
  }
  return named([...tallies.values()].filter((t) => t.listed), source.naming);
}

/** Name each repository for clients; two that end up with one name (never, while names resolve back) are merged, restricted winning. */
function named(tallies: Tally[], naming: ClientNaming): CachedRepository[] {
  const byName = new Map<string, CachedRepository>();
  for (const t of tallies) {
    const name = naming(t.upstream, t.repo);
    if (name === undefined) continue;
    const seen = byName.get(name);
    if (seen) seen.restricted ||= t.restricted;
    else byName.set(name, { name, upstream: t.upstream, repo: t.repo, restricted: t.restricted });
  }
  return [...byName.values()].sort((a, b) => lexically(a.name, b.name));
}

/** One repository's tags whose manifest is still cached, sorted. */
export async function tagsOf(records: AsyncIterable<TagRecord> | Iterable<TagRecord>, isCached: (digest: Digest) => boolean): Promise<CachedTag[]> {
  const out: CachedTag[] = [];
  for await (const { tag, entry } of records) {
    if (!isCached(entry.digest)) continue;
    out.push({ tag, digest: entry.digest, mediaType: entry.mediaType, size: entry.size, checkedAt: entry.checkedAt, restricted: entry.restricted === true });
  }
  return out.sort((a, b) => lexically(a.tag, b.tag));
}

/**
 * What the cache holds, by repository and tag, for listings: the registry catalog, tag lists
 * while an upstream is away, a status page. Read from the index at each call, never kept: the
 * cost is one pass over the tag records per catalog request (the objects are in memory already).
 */
export class CacheCatalog {
  private readonly cache: ContentCache;
  private readonly naming: ClientNaming;

  constructor(opts: { cache: ContentCache; naming: ClientNaming }) {
    this.cache = opts.cache;
    this.naming = opts.naming;
  }

  /** Every cached repository, sorted by client name; restricted ones only with `includeRestricted`. */
  async cachedRepositories(opts: { includeRestricted: boolean }): Promise<CachedRepository[]> {
    const all = await repositoriesOf({
      entries: this.cache.contentEntries(),
      tags: this.cache.allTags(),
      isCached: (d) => this.cache.peek(d) !== undefined,
      naming: this.naming,
    });
    return opts.includeRestricted ? all : all.filter((r) => !r.restricted);
  }

  /** The tags of one repository (upstream host, name as the upstream knows it) whose manifest is cached, sorted. */
  cachedTags(upstream: string, repo: string): Promise<CachedTag[]> {
    return tagsOf(this.cache.repoTags(upstream, repo), (d) => this.cache.peek(d) !== undefined);
  }
}
