import { digestAlgorithm, digestOf, parseDigest, type Digest } from '../oci/digest.ts';
import { RegistryError } from '../oci/errors.ts';
import type { CacheResult } from '../oci/headers.ts';
import { MANIFEST_ACCEPT, acceptsMediaType, sniffManifestMediaType } from '../oci/media-types.ts';
import type { Reference } from '../oci/reference.ts';
import type { Logger } from '../observability/logger.ts';
import type { Metrics } from '../observability/metrics.ts';
import type { SharedTier } from '../store/shared-tier.ts';
import type { SharedRecords } from '../cluster/shared-records.ts';
import type { ContentCache } from '../store/content-cache.ts';
import type { TagEntry } from '../store/index-store.ts';
import { readBounded } from '../upstream/read-body.ts';
import type { ManifestHead, UpstreamBody } from '../upstream/registry-api.ts';
import { allowsStale } from '../upstream/upstream-error.ts';
import type { ResolvedTarget } from '../upstream/upstreams.ts';
import type { AccessGuard } from './access-guard.ts';
import { credentialKey, isClientOwned, type ClientCredential } from '../auth/credentials.ts';
import type { TagTtl } from './tag-policy.ts';

export type ManifestRequest = ResolvedTarget & {
  reference: Reference;
  /** Media types from the client's Accept header(s); empty means anything. */
  accept: string[];
  auth: ClientCredential;
  /** HEAD: answer from cache or with an upstream HEAD, never download. */
  headOnly: boolean;
};

export type ManifestResult = {
  digest: Digest;
  mediaType: string;
  size: number;
  /** Undefined only for HEAD answered by an upstream HEAD. */
  bytes: Buffer | undefined;
  result: CacheResult;
  /** The cached copy's local file, when the store keeps one: a serving process may read it itself (src/serving/). */
  file?: string;
};

/** How long another node's record of an immutable tag is kept in the shared records. */
const IMMUTABLE_SHARED_MS = 30 * 24 * 3600 * 1000;

/**
 * Pull-through manifests. By digest: local first, immutable. By tag: the
 * cached association is trusted for the tag TTL, then revalidated with a HEAD
 * (cheap, and not counted by Docker Hub's pull limit); the manifest is fetched
 * again only if the digest moved. If the upstream is down, 5xx or 429, a
 * cached tag is served stale. A tag matching `immutableTags` is never revalidated.
 */
export class PullThroughManifests {
  private readonly cache: ContentCache;
  private readonly metrics: Metrics;
  private readonly log: Logger;
  private readonly maxBytes: number;
  private readonly tagTtlMs: TagTtl;
  private readonly inflight = new Map<string, Promise<ManifestResult>>();
  private readonly guard: AccessGuard;
  private readonly shared: SharedTier | undefined;
  private readonly records: SharedRecords | undefined;
  private readonly now: () => number;

  constructor(opts: {
    cache: ContentCache;
    guard: AccessGuard;
    metrics: Metrics;
    log: Logger;
    maxBytes: number;
    tagTtlMs: TagTtl;
    /** The clock for tag TTLs and checkedAt (tests inject one). */
    now?: () => number;
    /** Manifests shared with other nodes (S3), by digest; none for a node alone. */
    shared?: SharedTier | undefined;
    /** Tag records shared with other nodes (Redis), so a tag revalidated on one is fresh on all. */
    records?: SharedRecords | undefined;
  }) {
    this.shared = opts.shared;
    this.records = opts.records;
    this.now = opts.now ?? Date.now;
    this.cache = opts.cache;
    this.guard = opts.guard;
    this.metrics = opts.metrics;
    this.log = opts.log;
    this.maxBytes = opts.maxBytes;
    this.tagTtlMs = opts.tagTtlMs;
  }

  async get(req: ManifestRequest): Promise<ManifestResult> {
    if (req.reference.kind === 'digest') {
      const digest = req.reference.digest;
      const local = await this.readLocal(req, digest);
      if (local) return { ...local, result: 'hit' };
      return this.coalesced(req, async () => (await this.fromShared(req, digest)) ?? this.fetch(req, undefined));
    }
    const tag = req.reference.tag;
    const entry = await this.tagEntry(req, tag);
    // A HEAD needs only the tag record (dockerd and containerd HEAD the tag, then GET by digest);
    // a GET needs the manifest bytes too, here or in the shared tier.
    const usable = entry && (req.headOnly || this.cache.peek(entry.digest) || this.shared) && acceptsMediaType(req.accept, entry.mediaType) ? entry : undefined;
    if (!usable) return this.coalesced(req, () => this.fetch(req, undefined));
    if (usable.restricted) await this.checkTag(req, usable);
    if (this.now() - usable.checkedAt < this.tagTtlMs(req.upstream.host, tag)) {
      const local = await this.fromEntry(req, usable);
      if (local) return { ...local, result: 'hit' };
      return this.coalesced(req, () => this.fetch(req, undefined));
    }
    return this.coalesced(req, () => this.revalidate(req, usable));
  }

  /** What a tag record can answer: its metadata for a HEAD, the cached manifest for a GET. */
  private async fromEntry(req: ManifestRequest, entry: TagEntry): Promise<Omit<ManifestResult, 'result'> | undefined> {
    if (req.headOnly) return { digest: entry.digest, mediaType: entry.mediaType, size: entry.size, bytes: undefined };
    return (await this.readLocal(req, entry.digest)) ?? (await this.fromShared(req, entry.digest));
  }

  /**
   * The tag's record: this node's, or, when that is missing or due for revalidation, a fresher
   * one another node left in the shared records (it revalidated the tag since), kept here too.
   */
  private async tagEntry(req: ManifestRequest, tag: string): Promise<TagEntry | undefined> {
    const host = req.upstream.host;
    const local = await this.cache.getTag(host, req.remoteName, tag);
    if (!this.records || (local && this.now() - local.checkedAt < this.tagTtlMs(host, tag))) return local;
    const shared = parseTagEntry(await this.records.get(tagRecordName(host, req.remoteName, tag)));
    if (!shared || (local && local.checkedAt >= shared.checkedAt)) return local;
    await this.cache.putTag(host, req.remoteName, tag, shared).catch((err: unknown) => this.log.error({ err, tag }, 'failed to cache tag'));
    return shared;
  }

  /** Record a tag here and, for its TTL, for the other nodes. */
  private async putTag(req: ManifestRequest, tag: string, entry: TagEntry): Promise<void> {
    const host = req.upstream.host;
    await this.cache.putTag(host, req.remoteName, tag, entry);
    // An immutable tag's record is shared for a month (Redis needs a finite TTL); each node keeps it for ever.
    const ttlMs = Math.min(this.tagTtlMs(host, tag), IMMUTABLE_SHARED_MS) - (this.now() - entry.checkedAt);
    if (this.records && ttlMs > 0) await this.records.put(tagRecordName(host, req.remoteName, tag), JSON.stringify(entry), ttlMs);
  }

  /** A tag learned with a client's credential is only served after the upstream confirms this requester may see it. */
  private async checkTag(req: ManifestRequest, entry: TagEntry): Promise<void> {
    await this.guard.check(req.upstream, req.remoteName, { manifest: tagOf(req) }, req.auth);
    if (!isClientOwned(req.auth)) {
      await this.putTag(req, tagOf(req), { ...entry, restricted: false });
    }
  }

  /** Concurrent identical requests share one upstream exchange. */
  private coalesced(req: ManifestRequest, run: () => Promise<ManifestResult>): Promise<ManifestResult> {
    const ref = req.reference.kind === 'tag' ? req.reference.tag : req.reference.digest;
    const key = [req.upstream.host, req.remoteName, ref, req.accept.join(','), req.headOnly, credentialKey(req.auth)].join('\u0000');
    const existing = this.inflight.get(key);
    if (existing) return existing;
    const p = run().finally(() => this.inflight.delete(key));
    this.inflight.set(key, p);
    return p;
  }

  private async revalidate(req: ManifestRequest, entry: TagEntry): Promise<ManifestResult> {
    let head: ManifestHead;
    try {
      head = await req.upstream.headManifest(req.remoteName, tagOf(req), { accept: upstreamAccept(req.accept), auth: req.auth });
    } catch (err) {
      if (allowsStale(err, req.upstream.config.serveCachedOn404)) return this.serveStale(req, entry, err);
      throw err;
    }
    if (head.digest === entry.digest) {
      const local = await this.fromEntry(req, entry);
      if (local) {
        await this.putTag(req, tagOf(req), { ...entry, checkedAt: this.now() });
        return { ...local, result: 'revalidated' };
      }
    }
    return this.fetch(req, entry);
  }

  private async serveStale(req: ManifestRequest, entry: TagEntry, err: unknown): Promise<ManifestResult> {
    const local = await this.fromEntry(req, entry);
    if (!local) throw err;
    this.log.warn({ upstream: req.upstream.host, repo: req.remoteName, tag: tagOf(req), err: (err as Error).message }, 'upstream unavailable; serving stale tag');
    return { ...local, result: 'stale' };
  }

  /**
   * Ask the upstream. `stale` is a cached tag entry to fall back on if the
   * upstream fails in a way that allows it (down, 5xx, 429).
   */
  private async fetch(req: ManifestRequest, stale: TagEntry | undefined): Promise<ManifestResult> {
    let res: ManifestHead & { body?: UpstreamBody };
    try {
      const opts = { accept: upstreamAccept(req.accept), auth: req.auth };
      res = req.headOnly ? await req.upstream.headManifest(req.remoteName, tagOf(req), opts) : await req.upstream.getManifest(req.remoteName, tagOf(req), opts);
    } catch (err) {
      if (stale && allowsStale(err, req.upstream.config.serveCachedOn404)) return this.serveStale(req, stale, err);
      throw err;
    }
    const contentType = res.mediaType;
    const headerDigest = res.digest;
    if (!res.body) {
      let digest: Digest;
      try {
        digest = parseDigest(headerDigest ?? '');
      } catch {
        throw new RegistryError('UNAVAILABLE', { status: 502, message: 'upstream HEAD lacked a valid Docker-Content-Digest' });
      }
      const size = res.size;
      if (!contentType || size === undefined) {
        throw new RegistryError('UNAVAILABLE', { status: 502, message: 'upstream HEAD lacked type or length' });
      }
      if (req.reference.kind === 'tag') {
        // Remember tag -> digest so later HEADs within the TTL (and stale ones) need no upstream.
        await this
          .putTag(req, req.reference.tag, { digest, mediaType: contentType, size, checkedAt: this.now(), restricted: isClientOwned(req.auth) })
          .catch((err: unknown) => this.log.error({ err, digest }, 'failed to cache tag'));
      }
      return { digest, mediaType: contentType, size, bytes: undefined, result: 'miss' };
    }
    const bytes = await readBounded(res.body, this.maxBytes);
    this.metrics.upstreamBytes.inc({ kind: 'manifest', upstream: req.upstream.host }, bytes.length);
    const digest = digestOf(bytes, req.reference.kind === 'digest' ? digestAlgorithm(req.reference.digest) : 'sha256');
    // By digest, the body must hash to it; by tag, to the upstream's Docker-Content-Digest when it sent one.
    const expected = req.reference.kind === 'digest' ? req.reference.digest : headerDigest?.startsWith('sha256:') ? headerDigest : undefined;
    if (expected !== undefined && expected !== digest) {
      throw new RegistryError('MANIFEST_INVALID', { message: 'upstream manifest does not match its digest', detail: { expected, actual: digest } });
    }
    const mediaType = contentType && contentType !== 'application/json' && contentType !== 'text/plain' ? contentType : (sniffManifestMediaType(bytes) ?? 'application/json');
    await this.store(req, digest, mediaType, bytes);
    return { digest, mediaType, size: bytes.length, bytes, result: 'miss' };
  }

  /**
   * A manifest by digest from the tier shared with other nodes: verified against its digest,
   * checked for this requester if restricted, then kept locally. Undefined when the tier does not
   * have it (or it is not something this client accepts): the upstream is asked then.
   */
  private async fromShared(req: ManifestRequest, digest: Digest): Promise<ManifestResult | undefined> {
    const found = await this.shared?.open(digest);
    if (!found) return undefined;
    let bytes: Buffer;
    try {
      bytes = await readBounded(found.body, this.maxBytes);
    } catch (err) {
      this.log.warn({ digest, err: (err as Error).message }, 'manifest from the shared tier unreadable; asking the upstream');
      return undefined;
    }
    const { mediaType, restricted } = found.meta;
    if (digestOf(bytes, digestAlgorithm(digest)) !== digest) {
      this.log.error({ digest }, 'manifest from the shared tier does not match its digest; asking the upstream');
      return undefined;
    }
    if (!acceptsMediaType(req.accept, mediaType)) return undefined;
    if (restricted) await this.guard.check(req.upstream, req.remoteName, { manifest: digest }, req.auth);
    this.metrics.sharedBytes.inc({ direction: 'read' }, bytes.length);
    await this.cache
      .ingestBytes(digest, bytes, { kind: 'manifest', mediaType, upstream: req.upstream.host, repo: req.remoteName, restricted })
      .catch((err: unknown) => this.log.error({ err, digest }, 'failed to cache manifest'));
    return { digest, mediaType, size: bytes.length, bytes: req.headOnly ? undefined : bytes, result: 'miss', file: this.cache.fileOf(digest) };
  }

  private async store(req: ManifestRequest, digest: Digest, mediaType: string, bytes: Buffer): Promise<void> {
    const restricted = isClientOwned(req.auth);
    // Verified (fetch checked the digest): other nodes may have it from the shared tier.
    void this.shared?.put(digest, bytes, { restricted, mediaType });
    try {
      await this.cache.ingestBytes(digest, bytes, { kind: 'manifest', mediaType, upstream: req.upstream.host, repo: req.remoteName, restricted });
      if (req.reference.kind === 'tag') {
        await this.putTag(req, req.reference.tag, {
          digest, mediaType, size: bytes.length, checkedAt: this.now(), restricted,
        });
      }
    } catch (err) {
      // The client still gets the verified manifest; only caching failed.
      this.log.error({ err, digest }, 'failed to cache manifest');
    }
  }

  /** A cached manifest the client accepts, after the access check if it is restricted. */
  private async readLocal(req: ManifestRequest, digest: Digest): Promise<Omit<ManifestResult, 'result'> | undefined> {
    const entry = this.cache.peek(digest);
    if (!entry || !acceptsMediaType(req.accept, entry.mediaType)) return undefined;
    if (entry.restricted) {
      await this.guard.check(req.upstream, req.remoteName, { manifest: digest }, req.auth);
      if (!isClientOwned(req.auth)) await this.cache.markPublic(digest);
    }
    const local = await this.cache.readWhole(digest);
    if (!local) return undefined;
    return { digest, mediaType: local.entry.mediaType, size: local.bytes.length, bytes: local.bytes, file: this.cache.fileOf(digest) };
  }
}

function tagOf(req: ManifestRequest): string {
  return req.reference.kind === 'tag' ? req.reference.tag : req.reference.digest;
}

/** Forward the client's preferences; with none, ask for every modern manifest type. */
function upstreamAccept(accept: string[]): string {
  return accept.length > 0 ? accept.join(', ') : MANIFEST_ACCEPT;
}

function tagRecordName(host: string, repo: string, tag: string): string {
  return `tag:${host}/${repo}:${tag}`;
}

/** A tag record another node wrote; undefined unless it has every field a TagEntry needs. */
function parseTagEntry(raw: string | undefined): TagEntry | undefined {
  if (raw === undefined) return undefined;
  try {
    const v = JSON.parse(raw) as Partial<TagEntry>;
    if (typeof v.digest !== 'string' || typeof v.mediaType !== 'string' || typeof v.size !== 'number' || typeof v.checkedAt !== 'number') return undefined;
    return { digest: parseDigest(v.digest), mediaType: v.mediaType, size: v.size, checkedAt: v.checkedAt, restricted: v.restricted === true };
  } catch {
    return undefined;
  }
}
