import { isClientOwned } from '../auth/credentials.ts';
import type { Digest } from '../oci/digest.ts';
import { RegistryError } from '../oci/errors.ts';
import { X_CACHE, type CacheResult } from '../oci/headers.ts';
import type { Logger } from '../observability/logger.ts';
import type { Metrics } from '../observability/metrics.ts';
import type { BlobWriter, ByteRange } from '../store/blob-store-api.ts';
import { iterableSource, onClose, type ChunkSource } from '../store/chunk-source.ts';
import type { ContentCache } from '../store/content-cache.ts';
import type { SharedTier } from '../store/shared-tier.ts';
import type { BlobResponse } from '../upstream/registry-api.ts';
import type { TransferPriority } from '../upstream/rate-limiter.ts';
import type { AccessGuard } from './access-guard.ts';
import { fetchBlob, probe, type BlobRequest } from './blob-request.ts';
import { Fill } from './fill.ts';
import { FillSources, type FillSourcesOptions, type FillTerms } from './fill-sources.ts';
import { Semaphore } from './semaphore.ts';
import { createVerifyingStream } from './verifying-stream.ts';

// Callers of PullThroughBlobs name its request type from here.
export type { BlobRequest } from './blob-request.ts';

/**
 * A blob ready to serve, in one shape however it was found: cached, being
 * downloaded, or streamed straight through.
 */
export type OpenedBlob = {
  /** The whole blob's size; undefined when the upstream sent no length (no Range applies then). */
  size: number | undefined;
  result: CacheResult;
  /** The part of the blob `body` holds, when a Range was applied (a 206). */
  range: ByteRange | undefined;
  /** Small cached blobs come from memory (one write); everything else is read into the response's own buffers. */
  body: Buffer | ChunkSource;
  /** The body reads a stored blob (its buffers can be sized by how many such reads run), not bytes still arriving. */
  stored: boolean;
  /**
   * A cache hit's local file, or where a download will land, when the store keeps one: a serving
   * process may read it itself (src/serving/).
   */
  file?: string;
  /** The local file a download in progress is being written to (`file` once verified). */
  filling?: string;
};

/**
 * Reads a Range header against the blob's size once that is known: undefined
 * for the whole blob; throws RANGE_INVALID (416). (The route passes its parser
 * and the raw header rather than a closure: nothing is allocated per request.)
 */
export type RangeParser = (header: string | undefined, size: number) => ByteRange | undefined;

const HOT_BLOB_MAX_BYTES = 1024 * 1024;

/**
 * A fill in flight. `priority` is what its upstream transfer asks the bandwidth limiters for: a
 * prefetch starts it as `background`, and the first client that joins makes it `client`.
 */
type Running = FillTerms & { fill: Fill };
/** A fill that started, or the upstream answer to stream through because the cache could not take it. */
type Started = Running | { bypass: BlobResponse };
/** What joiners of a fill see: the fill, or undefined when it was bypassed (they then fetch their own stream). */
type Inflight = Running | undefined;

/** A blob being made cached without a client to serve (prefetch): how far along it is, and when it is done. */
export type Warming = {
  result: Exclude<CacheResult, 'bypass' | 'stale' | 'revalidated'>;
  size: number | undefined;
  /** Bytes on disk so far. */
  written(): number;
  /** Settles when the blob is committed; rejects with the fill's error if it failed. */
  done: Promise<void>;
};

export type PullThroughBlobsOptions = {
  cache: ContentCache;
  guard: AccessGuard;
  metrics: Metrics;
  log: Logger;
  fillTimeoutMs: number;
  shutdown: AbortSignal;
  maxConcurrentFills: number;
  fillQueueTimeoutMs: number;
  fillResumeAttempts: number;
  diskErrorBackoffMs: number;
  /** Content shared with other nodes (S3), looked in before the upstream; none for a node alone. */
  shared?: SharedTier | undefined;
  /** The nodes sharing a cache: one download per blob for all of them (cluster/); none for a node alone. */
  cluster?: FillSourcesOptions['cluster'];
};

/**
 * Pull-through blobs: local file, else join the in-flight fill, else start one.
 * A fill is owned by no client: it runs under its own deadline and the
 * shutdown signal, so the first requester leaving does not cancel it. After a
 * cache write error (disk full) misses are streamed straight through, without
 * caching, until the backoff ends and a fill is tried again.
 */
export class PullThroughBlobs {
  private readonly inflight = new Map<Digest, Promise<Inflight>>();
  private readonly opts: PullThroughBlobsOptions;
  private readonly fillSlots: Semaphore;
  /** Where each fill's bytes come from: the shared tier, a peer, or the upstream. */
  private readonly sources: FillSources;
  private diskTroubleUntil = 0;

  constructor(opts: PullThroughBlobsOptions) {
    this.opts = opts;
    this.fillSlots = new Semaphore(opts.maxConcurrentFills, opts.fillQueueTimeoutMs);
    this.sources = new FillSources(opts);
  }

  async open(req: BlobRequest, rangeHeader: string | undefined, parseRange: RangeParser): Promise<OpenedBlob> {
    this.opts.shared?.used(req.digest);
    const local = await this.openLocal(req, rangeHeader, parseRange);
    if (local) return local;
    const pending = this.inflight.get(req.digest);
    if (pending) return this.join(req, pending, rangeHeader, parseRange);
    // A fill may have committed while we looked at the disk.
    const raced = this.opts.cache.peek(req.digest) ? await this.openLocal(req, rangeHeader, parseRange) : undefined;
    if (raced) return raced;
    if (Date.now() < this.diskTroubleUntil) return this.streamThrough(req, await fetchBlob(req, undefined));
    return this.lead(req, rangeHeader, parseRange);
  }

  /**
   * Make a blob cached without serving it (prefetch): nothing to do if it is, else ride along on
   * the fill in flight, else start one at background priority. It is the same coalesced fill a
   * client's miss would start or join, so a blob is never fetched twice.
   */
  async warm(req: BlobRequest): Promise<Warming> {
    const cached = this.opts.cache.peek(req.digest);
    if (cached) {
      if (cached.restricted) await this.checkRestricted(req);
      return { result: 'hit', size: cached.size, written: () => cached.size, done: Promise.resolve() };
    }
    const pending = this.inflight.get(req.digest);
    let started: Started | Inflight;
    if (pending) {
      started = await pending;
      if (started?.restricted) await this.opts.guard.check(req.upstream, req.remoteName, probe(req), req.auth);
    } else {
      const raced = this.opts.cache.peek(req.digest);
      if (raced) return { result: 'hit', size: raced.size, written: () => raced.size, done: Promise.resolve() };
      if (Date.now() < this.diskTroubleUntil) throw cacheUnwritable();
      started = await this.share(req, 'background');
    }
    if (!started || 'bypass' in started) {
      started?.bypass.body.destroy();
      throw cacheUnwritable();
    }
    const fill = started.fill;
    const done = fill.done.then(() => {
      if (fill.state !== 'committed') throw fill.error ?? new Error('fill failed');
    });
    return { result: pending ? 'coalesced' : 'miss', size: fill.expectedSize, written: () => fill.written, done };
  }

  /** Start the fill; only this request may stream the leader's own upstream answer if the cache can't take it. */
  private async lead(req: BlobRequest, rangeHeader: string | undefined, parseRange: RangeParser): Promise<OpenedBlob> {
    const s = await this.share(req, 'client');
    if ('bypass' in s) return this.streamThrough(req, s.bypass);
    return this.fromFill(s.fill, 'miss', rangeHeader, parseRange);
  }

  /** Start a fill and publish it in the in-flight map for joiners, until it ends. */
  private share(req: BlobRequest, priority: TransferPriority): Promise<Started> {
    const started = this.startFill(req, priority);
    const shared = started.then((s): Inflight => ('fill' in s ? s : undefined));
    this.inflight.set(req.digest, shared);
    const forget = (): void => {
      if (this.inflight.get(req.digest) === shared) this.inflight.delete(req.digest);
    };
    void shared.then((s) => s ?? forget(), forget);
    return started;
  }

  /** Ride along on a fill in progress: its error is ours; if it was bypassed, fetch a verified stream of our own. */
  private async join(req: BlobRequest, pending: Promise<Inflight>, rangeHeader: string | undefined, parseRange: RangeParser): Promise<OpenedBlob> {
    const started = await pending;
    if (!started) return this.streamThrough(req, await fetchBlob(req, undefined));
    // Never let a request ride along on a download made with someone else's credential unchecked.
    if (started.restricted) await this.opts.guard.check(req.upstream, req.remoteName, probe(req), req.auth);
    // A client now waits on it: a prefetch's fill goes on at client priority.
    started.priority = 'client';
    return this.fromFill(started.fill, 'coalesced', rangeHeader, parseRange);
  }

  /** Bytes of an in-progress fill, counted as a waiter while they stream. */
  private fromFill(fill: Fill, result: CacheResult, rangeHeader: string | undefined, parseRange: RangeParser): OpenedBlob {
    if (fill.state === 'failed') {
      // Failed before we answered: say so properly instead of opening a body we'd have to cut.
      throw new RegistryError('UNAVAILABLE', {
        status: 502, message: 'upstream sent bad data for this blob', detail: { outcome: fill.error?.outcome }, headers: { [X_CACHE]: result.toUpperCase() },
      });
    }
    const size = fill.expectedSize;
    const range = size === undefined ? undefined : withResult(result, rangeHeader, parseRange, size);
    const waiters = this.opts.metrics.inflightWaiters;
    waiters.inc();
    return {
      size, result, range, body: onClose(fill.openSource(range?.start ?? 0, range?.end), () => waiters.dec()), stored: false,
      filling: fill.writingFile, file: this.opts.cache.pathFor(fill.digest),
    };
  }

  /**
   * For another node (http/peer-routes.ts): this node's bytes of a blob it is downloading or has,
   * from `start` (to `end`). Never starts a download and never checks access: the asking node
   * checks its own client, as for any restricted content. Undefined when this node has neither.
   * `size` is undefined while a download whose upstream sent no Content-Length runs.
   */
  async forPeer(digest: Digest): Promise<{ size: number | undefined; open(start: number, end?: number): Promise<ChunkSource | undefined> } | undefined> {
    const pending = this.inflight.get(digest);
    const running = pending ? await pending.catch(() => undefined) : undefined;
    const fill = running?.fill;
    if (fill && fill.state !== 'failed') return { size: fill.expectedSize, open: async (start, end) => fill.openSource(start, end) };
    const entry = this.opts.cache.peek(digest);
    if (!entry) return undefined;
    return { size: entry.size, open: async (start, end) => (await this.opts.cache.open(digest, { start, end: end ?? entry.size }))?.source };
  }

  /** HEAD never starts a download: local size, in-flight size, else the upstream's HEAD. */
  async head(req: BlobRequest): Promise<{ size: number | undefined; result: CacheResult }> {
    const entry = await this.opts.cache.stat(req.digest);
    if (entry) {
      if (entry.restricted) await this.checkRestricted(req);
      return { size: entry.size, result: 'hit' };
    }
    const pending = this.inflight.get(req.digest);
    if (pending) {
      const started = await pending.catch(() => undefined);
      if (started?.restricted) await this.opts.guard.check(req.upstream, req.remoteName, probe(req), req.auth);
      if (started?.fill.expectedSize !== undefined) return { size: started.fill.expectedSize, result: 'coalesced' };
    }
    const { size } = await req.upstream.headBlob(req.remoteName, req.digest, { auth: req.auth });
    return { size, result: 'miss' };
  }

  /** A cached blob, after the access check if it is restricted; undefined on a miss. */
  private async openLocal(req: BlobRequest, rangeHeader: string | undefined, parseRange: RangeParser): Promise<OpenedBlob | undefined> {
    const entry = this.opts.cache.peek(req.digest);
    if (!entry) return undefined;
    if (entry.restricted) await this.checkRestricted(req);
    if (entry.size <= HOT_BLOB_MAX_BYTES) {
      const whole = await this.opts.cache.readWhole(req.digest);
      if (!whole) return undefined;
      const range = withResult('hit', rangeHeader, parseRange, whole.bytes.length);
      const body = range ? whole.bytes.subarray(range.start, range.end) : whole.bytes;
      return { size: whole.bytes.length, result: 'hit', range, body, stored: true, file: this.opts.cache.fileOf(req.digest) };
    }
    const range = withResult('hit', rangeHeader, parseRange, entry.size);
    const local = await this.opts.cache.open(req.digest, range);
    return local ? { size: local.size, result: 'hit', range, body: local.source, stored: true, file: this.opts.cache.fileOf(req.digest) } : undefined;
  }

  private async checkRestricted(req: BlobRequest): Promise<void> {
    await this.opts.guard.check(req.upstream, req.remoteName, probe(req), req.auth);
    // Passing with Gantry's own auth means anyone Gantry admits may see it.
    if (!isClientOwned(req.auth)) await this.opts.cache.markPublic(req.digest);
  }

  /** Verified bytes straight from the upstream, not cached: served whole (RFC 9110 lets a server ignore Range). */
  private streamThrough(req: BlobRequest, res: BlobResponse): OpenedBlob {
    const body = res.body.pipe(createVerifyingStream(req.digest, res.size));
    res.body.on('error', (err) => body.destroy(err));
    res.body.on('data', (chunk: Buffer) => this.opts.metrics.upstreamBytes.inc({ kind: 'blob', upstream: req.upstream.host }, chunk.length));
    return { size: res.size, result: 'bypass', range: undefined, body: iterableSource(body), stored: false };
  }

  private async startFill(req: BlobRequest, priority: TransferPriority): Promise<Started> {
    const release = await this.fillSlots.acquire();
    let handedOver = false;
    try {
      const signal = AbortSignal.any([this.opts.shutdown, AbortSignal.timeout(this.opts.fillTimeoutMs)]);
      const source = await this.sources.open(req, signal);
      const { restricted } = source;
      const upstreamHost = req.upstream.host;
      const { cache, metrics, log } = this.opts;
      let writer: BlobWriter;
      try {
        writer = await cache.ingest(req.digest, { kind: 'blob', mediaType: 'application/octet-stream', upstream: upstreamHost, repo: req.remoteName, restricted });
      } catch (err) {
        // Can't even start writing: stream this one through and stop trying for a while.
        this.diskTrouble(err);
        return { bypass: await this.sources.bypass(req, source) };
      }
      // The shared tier's copy being completed, once there is one: the cluster's lease is held
      // until it is, so no node goes upstream for the blob in between.
      let published: Promise<void> | undefined;
      writer = this.sources.withSharedCopy(req, source, writer, (p) => {
        published = p;
      });
      const fill = new Fill({
        digest: req.digest,
        expectedSize: source.size,
        writer,
        openCommitted: async (range) => (await cache.open(req.digest, range))?.source,
      });
      const running: Running = { fill, restricted, priority, lease: source.from === 'upstream' ? source.lease : undefined };
      metrics.inflightFills.inc();
      const started = performance.now();
      handedOver = true;
      void fill.run(this.sources.body(req, source, signal, running)).then((outcome) => {
        this.inflight.delete(req.digest);
        release();
        // A download this node took over from a dead holder reached it partly through a peer:
        // the shared tier gets it from the verified local copy instead.
        if (outcome === 'committed' && source.from === 'peer' && running.lease) published = this.sources.publishLocal(req.digest, restricted);
        void (published ?? Promise.resolve()).finally(() => void running.lease?.release());
        metrics.inflightFills.dec();
        metrics.fills.inc({ outcome });
        const fields = { digest: req.digest, upstream: upstreamHost, repo: req.remoteName, from: source.from, bytes: fill.written, durationMs: Math.round(performance.now() - started) };
        if (outcome === 'committed') {
          log.info(fields, 'blob fill committed');
          if (this.diskTroubleUntil > 0) this.diskRecovered();
        } else {
          log.error({ ...fields, outcome, err: fill.error?.message }, 'blob fill failed; nothing cached');
          if (outcome === 'write_error') this.diskTrouble(fill.error);
        }
      });
      return running;
    } finally {
      if (!handedOver) release();
    }
  }

  private diskTrouble(err: unknown): void {
    this.opts.metrics.cacheWriteErrors.inc();
    const first = Date.now() >= this.diskTroubleUntil;
    this.diskTroubleUntil = Date.now() + this.opts.diskErrorBackoffMs;
    this.opts.metrics.cacheBypass.set(1);
    // Logged once per backoff interval, not once per request.
    if (first) {
      this.opts.log.error({ err: (err as Error | undefined)?.message, backoffMs: this.opts.diskErrorBackoffMs }, 'cache write failed; streaming misses without caching for a while');
    }
  }

  private diskRecovered(): void {
    this.diskTroubleUntil = 0;
    this.opts.metrics.cacheBypass.set(0);
    this.opts.log.warn('cache writes work again');
  }
}

/**
 * Apply the Range; a refused one (416) still says how the blob was found,
 * as every other answer does.
 */
function withResult(result: CacheResult, rangeHeader: string | undefined, parseRange: RangeParser, size: number): ByteRange | undefined {
  try {
    return parseRange(rangeHeader, size);
  } catch (err) {
    if (!(err instanceof RegistryError)) throw err;
    throw new RegistryError(err.code, { status: err.status, message: err.message, detail: err.detail, headers: { ...err.headers, [X_CACHE]: result.toUpperCase() }, cause: err.cause });
  }
}

function cacheUnwritable(): RegistryError {
  return new RegistryError('UNAVAILABLE', { message: 'the cache cannot take writes right now (see the log); nothing was fetched' });
}
