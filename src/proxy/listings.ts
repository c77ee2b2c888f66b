import type { ClientCredential } from '../auth/credentials.ts';
import type { Digest } from '../oci/digest.ts';
import type { Logger } from '../observability/logger.ts';
import type { CacheCatalog } from '../store/catalog.ts';
import { readBounded } from '../upstream/read-body.ts';
import type { ListingResponse } from '../upstream/registry-api.ts';
import { allowsStale } from '../upstream/upstream-error.ts';
import type { ResolvedTarget } from '../upstream/upstreams.ts';
import type { AccessGuard } from './access-guard.ts';

export type ListingRequest = ResolvedTarget & {
  auth: ClientCredential;
  /** The client's Accept header, forwarded as it is. */
  accept: string | undefined;
  /** HEAD: the upstream is still sent a GET (distribution answers HEAD on tags/list with 405); the body is dropped. */
  headOnly: boolean;
};

/** A relayed listing: the headers a client may need and, for a GET, the body. */
export type Listing = { headers: Record<string, string>; bytes: Buffer | undefined };

/**
 * A tag list: the upstream's, relayed; or, while the upstream can't answer, the tags the cache
 * holds for the repository (sorted, access already checked), for the route to page and mark stale.
 */
export type TagsAnswer = { source: 'upstream'; listing: Listing } | { source: 'cache'; tags: string[] };

/**
 * Tag lists: small JSON answers relayed from the upstream as they
 * are, never cached (X-Cache BYPASS), bounded in size. A tag list falls back
 * on the tags the cache knows when the upstream is down, 5xx or 429, as a
 * tag's manifest does.
 */
export class PassthroughListings {
  private readonly maxBytes: number;
  /** What the cache holds by repository and tag; the registry catalog is answered from it too. */
  readonly catalog: CacheCatalog;
  private readonly guard: AccessGuard;
  private readonly log: Logger;

  constructor(opts: { maxBytes: number; catalog: CacheCatalog; guard: AccessGuard; log: Logger }) {
    this.maxBytes = opts.maxBytes;
    this.catalog = opts.catalog;
    this.guard = opts.guard;
    this.log = opts.log;
  }

  async tags(req: ListingRequest, q: { n?: string | undefined; last?: string | undefined }): Promise<TagsAnswer> {
    let res: ListingResponse;
    try {
      res = await req.upstream.listTags(req.remoteName, { ...q, accept: req.accept, auth: req.auth });
    } catch (err) {
      const cached = allowsStale(err, req.upstream.config.serveCachedOn404) ? await this.cachedTags(req) : undefined;
      if (cached === undefined) throw err;
      this.log.warn({ upstream: req.upstream.host, repo: req.remoteName, err: (err as Error).message }, 'upstream unavailable; serving cached tag list');
      return { source: 'cache', tags: cached };
    }
    return { source: 'upstream', listing: await this.relay(req, res) };
  }

  /**
   * The repository's cached tags; undefined when there are none (the upstream's error stands).
   * Tags learned with a client's credential cost this requester the access check a cached
   * manifest costs: the list names what only some may see.
   */
  private async cachedTags(req: ListingRequest): Promise<string[] | undefined> {
    const tags = await this.catalog.cachedTags(req.upstream.host, req.remoteName);
    if (tags.length === 0) return undefined;
    const restricted = tags.find((t) => t.restricted);
    if (restricted) await this.guard.check(req.upstream, req.remoteName, { manifest: restricted.digest }, req.auth);
    return tags.map((t) => t.tag);
  }

  private async relay(req: ListingRequest, res: ListingResponse): Promise<Listing> {
    if (req.headOnly) {
      await res.body.dump();
      return { headers: res.headers, bytes: undefined };
    }
    return { headers: res.headers, bytes: await readBounded(res.body, this.maxBytes) };
  }
}
