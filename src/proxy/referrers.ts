import { credentialKey, isClientOwned, type ClientCredential } from '../auth/credentials.ts';
import { digestAlgorithm, digestHex, type Digest } from '../oci/digest.ts';
import { RegistryError } from '../oci/errors.ts';
import type { CacheResult } from '../oci/headers.ts';
import { MT_OCI_INDEX } from '../oci/media-types.ts';
import type { Tag } from '../oci/reference.ts';
import type { Logger } from '../observability/logger.ts';
import type { RecordStore } from '../store/index-store.ts';
import { tagKey } from '../store/index-store.ts';
import { readBounded } from '../upstream/read-body.ts';
import { allowsStale, UpstreamStatusError } from '../upstream/upstream-error.ts';
import type { ResolvedTarget } from '../upstream/upstreams.ts';
import type { AccessGuard } from './access-guard.ts';
import type { PullThroughManifests } from './manifests.ts';
import type { TagTtl } from './tag-policy.ts';

export type ReferrersRequest = ResolvedTarget & { subject: Digest; artifactType: string | undefined; auth: ClientCredential };

/** An OCI image index listing a subject's referrers; `filtered` when artifactType was applied here. */
export type ReferrersResult = { bytes: Buffer; filtered: boolean; result: CacheResult };

/** A referrers answer as kept in the index: the whole (unfiltered) list, when it was fetched, and whose it was. */
type Kept = { index: string; checkedAt: number; restricted: boolean };

type Descriptor = { mediaType?: unknown; digest?: unknown; size?: unknown; artifactType?: unknown; annotations?: unknown };
type Index = { schemaVersion: 2; mediaType: string; manifests: Descriptor[] };

/**
 * The referrers API (`GET /v2/<name>/referrers/<digest>`), cached: an answer is kept for the tag
 * TTL of the subject's fallback tag (`sha256-<hex>`, so `immutableTags` can cover it), then fetched
 * again, and served stale while the upstream is down, 5xx or 429. An upstream without the API
 * (404: Distribution 2.8) is asked for the referrers tag of the distribution spec instead, and a
 * subject with neither gets an empty index, so clients see one API whatever the upstream supports.
 * The whole list is kept; `artifactType` is applied here.
 */
export class PullThroughReferrers {
  private readonly records: RecordStore;
  private readonly kept = new Map<string, Kept>();
  private readonly inflight = new Map<string, Promise<ReferrersResult>>();
  private readonly opts: { manifests: PullThroughManifests; guard: AccessGuard; tagTtlMs: TagTtl; maxBytes: number; log: Logger; now?: () => number };

  constructor(opts: PullThroughReferrers['opts'] & { records: RecordStore }) {
    this.opts = opts;
    this.records = opts.records;
  }

  /** Load what earlier runs kept (answers survive a restart, for a site whose uplink is down). */
  async load(): Promise<void> {
    for await (const [key, value] of this.records.all()) if (isKept(value)) this.kept.set(key, value);
  }

  async get(req: ReferrersRequest): Promise<ReferrersResult> {
    const key = tagKey(req.upstream.host, req.remoteName, req.subject);
    const kept = this.kept.get(key);
    if (kept?.restricted) await this.opts.guard.check(req.upstream, req.remoteName, { manifest: req.subject }, req.auth);
    if (kept && this.now() - kept.checkedAt < this.opts.tagTtlMs(req.upstream.host, fallbackTag(req.subject))) return answer(kept, req.artifactType, 'hit');
    const flight = [key, credentialKey(req.auth)].join('\u0000');
    const running = this.inflight.get(flight);
    if (running) return filterResult(await running, req.artifactType);
    const p = this.refresh(req, key, kept).finally(() => this.inflight.delete(flight));
    this.inflight.set(flight, p);
    return filterResult(await p, req.artifactType);
  }

  /** Fetch the whole list again; on an outage, the kept one, marked stale. Resolves unfiltered. */
  private async refresh(req: ReferrersRequest, key: string, kept: Kept | undefined): Promise<ReferrersResult> {
    let index: Index;
    try {
      index = await this.fetch(req);
    } catch (err) {
      if (!kept || !allowsStale(err, req.upstream.config.serveCachedOn404)) throw err;
      this.opts.log.warn({ upstream: req.upstream.host, repo: req.remoteName, subject: req.subject, err: (err as Error).message }, 'upstream unavailable; serving stale referrers');
      return answer(kept, undefined, 'stale');
    }
    const fresh: Kept = { index: JSON.stringify(index), checkedAt: this.now(), restricted: isClientOwned(req.auth) };
    this.kept.set(key, fresh);
    await this.records.put(key, fresh).catch((err: unknown) => this.opts.log.error({ err, subject: req.subject }, 'failed to keep referrers'));
    return answer(fresh, undefined, kept ? 'revalidated' : 'miss');
  }

  /** The upstream's referrers API, else its referrers tag, else nothing: always an index. */
  private async fetch(req: ReferrersRequest): Promise<Index> {
    try {
      const res = await req.upstream.getReferrers(req.remoteName, req.subject, { accept: MT_OCI_INDEX, auth: req.auth });
      return parseIndex(await readBounded(res.body, this.opts.maxBytes));
    } catch (err) {
      if (!(err instanceof UpstreamStatusError) || (err.upstreamStatus !== 404 && err.upstreamStatus !== 405)) throw err;
    }
    return this.fromFallbackTag(req);
  }

  private async fromFallbackTag(req: ReferrersRequest): Promise<Index> {
    try {
      const m = await this.opts.manifests.get({ ...req, reference: { kind: 'tag', tag: fallbackTag(req.subject) }, accept: [MT_OCI_INDEX], headOnly: false });
      if (m.bytes) return parseIndex(m.bytes);
    } catch (err) {
      if (!(err instanceof RegistryError) || err.status !== 404) throw err;
    }
    return emptyIndex();
  }

  private now(): number {
    return (this.opts.now ?? Date.now)();
  }
}

/** The referrers tag schema of the distribution spec: `<alg>-<hex>`, the hex cut to fit a tag. */
export function fallbackTag(subject: Digest): Tag {
  return `${digestAlgorithm(subject)}-${digestHex(subject)}`.slice(0, 128) as Tag;
}

/** Keep the descriptors of one artifact type (the API's `artifactType` filter). */
export function filterIndex(index: Index, artifactType: string): Index {
  return { ...index, manifests: index.manifests.filter((d) => artifactTypeOf(d) === artifactType) };
}

/** A referrers list from an upstream: an image index with a list of descriptors, or a 502. */
export function parseIndex(bytes: Buffer): Index {
  let v: unknown;
  try {
    v = JSON.parse(bytes.toString('utf8'));
  } catch {
    throw badIndex('not JSON');
  }
  if (typeof v !== 'object' || v === null || !Array.isArray((v as { manifests?: unknown }).manifests)) throw badIndex('no manifests list');
  const manifests = (v as { manifests: unknown[] }).manifests.filter((d): d is Descriptor => typeof d === 'object' && d !== null);
  return { schemaVersion: 2, mediaType: MT_OCI_INDEX, manifests };
}

function emptyIndex(): Index {
  return { schemaVersion: 2, mediaType: MT_OCI_INDEX, manifests: [] };
}

/** A referrers tag's index names each referrer's artifactType in an annotation when the manifest has none (OCI 1.1). */
function artifactTypeOf(d: Descriptor): unknown {
  const annotations = typeof d.annotations === 'object' && d.annotations !== null ? (d.annotations as Record<string, unknown>) : {};
  return d.artifactType ?? annotations['org.opencontainers.artifact.type'];
}

function answer(kept: Kept, artifactType: string | undefined, result: CacheResult): ReferrersResult {
  return filterResult({ bytes: Buffer.from(kept.index), filtered: false, result }, artifactType);
}

function filterResult(r: ReferrersResult, artifactType: string | undefined): ReferrersResult {
  if (artifactType === undefined || artifactType === '') return r;
  const filtered = filterIndex(parseIndex(r.bytes), artifactType);
  return { bytes: Buffer.from(JSON.stringify(filtered)), filtered: true, result: r.result };
}

function badIndex(why: string): RegistryError {
  return new RegistryError('UNAVAILABLE', { status: 502, message: `upstream referrers answer is not an image index (${why})` });
}

function isKept(v: unknown): v is Kept {
  if (typeof v !== 'object' || v === null) return false;
  const k = v as Record<string, unknown>;
  return typeof k['index'] === 'string' && typeof k['checkedAt'] === 'number' && typeof k['restricted'] === 'boolean';
}
