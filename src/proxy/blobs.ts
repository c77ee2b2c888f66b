import { isClientOwned, type ClientCredential } from '../auth/credentials.ts';
import type { Digest } from '../oci/digest.ts';
import { RegistryError } from '../oci/errors.ts';
import { X_CACHE, type CacheResult } from '../oci/headers.ts';
import type { Logger } from '../observability/logger.ts';
import type { Metrics } from '../observability/metrics.ts';
import type { BlobWriter, ByteRange } from '../store/blob-store-api.ts';
import { iterableSource, onClose, type ChunkSource } from '../store/chunk-source.ts';
import type { ContentCache } from '../store/content-cache.ts';
import { teeToShared, type SharedTier } from '../store/shared-tier.ts';
import type { Coordinator, FillLease, LeaseHolder } from '../cluster/coordinator.ts';
import { openPeerBlob } from '../cluster/peer-client.ts';
import { setTimeout as sleep } from 'node:timers/promises';
import type { BlobResponse } from '../upstream/registry-api.ts';
import type { TransferPriority } from '../upstream/rate-limiter.ts';
import type { ResolvedTarget } from '../upstream/upstreams.ts';
import type { AccessGuard, AccessProbe } from './access-guard.ts';
import { Fill } from './fill.ts';
import { resumableBody } from './resumable-body.ts';
import { Semaphore } from './semaphore.ts';
import { createVerifyingStream } from './verifying-stream.ts';

export type BlobRequest = ResolvedTarget & { digest: Digest; auth: ClientCredential };

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
type Running = { fill: Fill; restricted: boolean; priority: TransferPriority; lease?: { release(): Promise<void> } | undefined };
/** A fill that started, or the upstream answer to stream through because the cache could not take it. */
type Started = Running | { bypass: BlobResponse };
/** Where a fill's bytes come from (see PullThroughBlobs.source). */
type FillSource =
  | { from: 'shared' | 'peer'; size: number; restricted: boolean; body: AsyncIterable<Uint8Array> }
  | { from: 'upstream'; size: number | undefined; restricted: boolean; res: BlobResponse; lease: { release(): Promise<void> } | undefined };
/** A blob missing here and in the shared tier: a peer's stream, or the upstream's answer (with this node's lease, if taken). */
type ClusterSource =
  | { from: 'peer'; holder: LeaseHolder; size: number; body: AsyncIterable<Uint8Array> }
  | { from: 'upstream'; res: BlobResponse; lease: { release(): Promise<void> } | undefined };
/** How long a follower waits for a dead lease holder's lease to expire before it downloads alone (the lease lives 6 s). */
const LEASE_WAIT_MS = 8_000;
const LEASE_POLL_MS = 250;
/** Reads of a local copy being published to the shared tier. */
const PUBLISH_CHUNK_BYTES = 1024 * 1024;
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
  cluster?: { coordinator: Coordinator; peerToken: string } | undefined;
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
  private diskTroubleUntil = 0;

  constructor(opts: PullThroughBlobsOptions) {
    this.opts = opts;
    this.fillSlots = new Semaphore(opts.maxConcurrentFills, opts.fillQueueTimeoutMs);
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
    if (Date.now() < this.diskTroubleUntil) return this.streamThrough(req, await this.fetch(req, undefined));
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
    if (!started) return this.streamThrough(req, await this.fetch(req, undefined));
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
   * whatever the range. Never starts a download and never checks access: the asking node checks
   * its own client, as for any restricted content. Undefined when this node has neither, or the
   * download's size is unknown (no Content-Length upstream).
   */
  async forPeer(digest: Digest): Promise<{ size: number; open(range: ByteRange): Promise<ChunkSource | undefined> } | undefined> {
    const pending = this.inflight.get(digest);
    const running = pending ? await pending.catch(() => undefined) : undefined;
    const fill = running?.fill;
    if (fill && fill.state !== 'failed' && fill.expectedSize !== undefined) {
      return { size: fill.expectedSize, open: async (range) => fill.openSource(range.start, range.end) };
    }
    const entry = this.opts.cache.peek(digest);
    if (!entry) return undefined;
    return { size: entry.size, open: async (range) => (await this.opts.cache.open(digest, range))?.source };
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

  /** GET the blob upstream (from `offset` with a Range request when resuming). */
  private fetch(req: BlobRequest, signal: AbortSignal | undefined, offset = 0): Promise<BlobResponse> {
    return req.upstream.getBlob(req.remoteName, req.digest, { auth: req.auth, signal, offset });
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
      const source = await this.source(req, signal);
      const { restricted } = source;
      const upstreamHost = req.upstream.host;
      const { cache, metrics, log } = this.opts;
      let writer: BlobWriter;
      try {
        writer = await cache.ingest(req.digest, { kind: 'blob', mediaType: 'application/octet-stream', upstream: upstreamHost, repo: req.remoteName, restricted });
      } catch (err) {
        // Can't even start writing: stream this one through and stop trying for a while.
        this.diskTrouble(err);
        if (source.from !== 'upstream') return { bypass: await this.bypassOther(req, source.body) };
        void source.lease?.release();
        return { bypass: source.res };
      }
      // Fetched upstream: the shared tier gets a copy, published once the local commit verified it;
      // the cluster's lease is held until then, so no node goes upstream for it in between.
      let published: Promise<void> | undefined;
      if (source.from === 'upstream' && this.opts.shared) {
        const upload = this.opts.shared.upload(req.digest, source.size, { restricted, mediaType: 'application/octet-stream' });
        writer = teeToShared(writer, upload, (p) => {
          published = p;
        });
      }
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
      void fill.run(this.fillBody(req, source, signal, running)).then((outcome) => {
        this.inflight.delete(req.digest);
        release();
        // A download this node took over from a dead holder reached it partly through a peer:
        // the shared tier gets it from the verified local copy instead.
        if (outcome === 'committed' && source.from === 'peer' && running.lease) published = this.publishLocal(req.digest, restricted);
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

  /**
   * Where a fill's bytes come from: the shared tier when it has the blob, else the node already
   * downloading it for the cluster, else the upstream (under the cluster's lease when there is
   * one). Restricted content from the tier or a peer is served only after the same access check
   * a local hit gets.
   */
  private async source(req: BlobRequest, signal: AbortSignal): Promise<FillSource> {
    // A node downloading it now means S3 cannot have it yet: skip that round trip and follow the
    // download (under load, an S3 miss cost followers on other nodes most of a second).
    const downloading = await this.opts.cluster?.coordinator.holderOf(req.digest);
    const shared = downloading ? undefined : await this.opts.shared?.open(req.digest);
    if (shared) {
      await this.checkOrDrop(req, shared.meta.restricted, shared.body);
      return { from: 'shared', size: shared.size, restricted: shared.meta.restricted, body: shared.body };
    }
    const restricted = isClientOwned(req.auth);
    const got = await this.clusterOrUpstream(req, restricted, 0, signal);
    if (got.from === 'peer') {
      await this.checkOrDrop(req, got.holder.restricted, got.body);
      return { from: 'peer', size: got.size, restricted: got.holder.restricted, body: got.body };
    }
    return { from: 'upstream', size: got.res.size, restricted, res: got.res, lease: got.lease };
  }

  private async checkOrDrop(req: BlobRequest, restricted: boolean, body: AsyncIterable<Uint8Array>): Promise<void> {
    if (!restricted) return;
    try {
      await this.opts.guard.check(req.upstream, req.remoteName, probe(req), req.auth);
    } catch (err) {
      destroyBody(body);
      throw err;
    }
  }

  /**
   * Bytes from `offset` of a blob neither this node nor the shared tier has: streamed from the node
   * holding the cluster's lease on it, or fetched upstream under a lease taken here. A holder that
   * cannot be reached (killed mid-download) is waited out until its lease expires, so one node, not
   * every follower, resumes the download upstream. Without a cluster: the upstream, as always.
   */
  private async clusterOrUpstream(req: BlobRequest, restricted: boolean, offset: number, signal: AbortSignal): Promise<ClusterSource> {
    const cluster = this.opts.cluster;
    const deadline = Date.now() + LEASE_WAIT_MS;
    for (;;) {
      const lease: FillLease = cluster ? await cluster.coordinator.fillLease(req.digest, restricted) : { kind: 'alone' };
      if (lease.kind === 'peer' && cluster) {
        const peer = await openPeerBlob(lease.holder.url, cluster.peerToken, req.digest, offset);
        if (peer !== 'unreachable' && peer !== 'absent') {
          const counted = countBytes(peer.body, (n) => this.opts.metrics.peerBytes.inc({ direction: 'received' }, n));
          return { from: 'peer', holder: lease.holder, size: peer.size, body: withDestroy(counted, peer.body) };
        }
        if (peer === 'unreachable' && Date.now() < deadline) {
          await sleep(LEASE_POLL_MS, undefined, { signal });
          continue;
        }
      }
      try {
        const res = await this.fetch(req, signal, offset);
        return { from: 'upstream', res, lease: lease.kind === 'mine' ? lease : undefined };
      } catch (err) {
        if (lease.kind === 'mine') await lease.release();
        throw err;
      }
    }
  }

  /** The bytes a fill runs on: resumed from where they were cut (Range), upstream ones paced and counted. */
  private fillBody(req: BlobRequest, source: FillSource, signal: AbortSignal, running: Running): AsyncIterable<Uint8Array> {
    const { metrics, log, shared } = this.opts;
    const resumeOpts = { maxResumes: this.opts.fillResumeAttempts, signal, log, onResume: () => metrics.fillResumes.inc() };
    if (source.from === 'upstream') {
      const upstreamHost = req.upstream.host;
      const body = resumableBody(source.res.body, async (offset) => (await this.fetch(req, signal, offset)).body, resumeOpts);
      const paced = req.upstream.throttle(body, () => running.priority);
      return countBytes(paced, (n) => metrics.upstreamBytes.inc({ kind: 'blob', upstream: upstreamHost }, n));
    }
    if (source.from === 'shared') {
      const body = resumableBody(source.body, async (offset) => {
        const rest = await shared?.open(req.digest, offset);
        if (!rest) throw new Error('the shared tier lost the blob mid-read');
        return rest.body;
      }, resumeOpts);
      return countBytes(body, (n) => metrics.sharedBytes.inc({ direction: 'read' }, n));
    }
    // From a peer: if it goes away mid-blob, the rest comes from whoever has it now (the shared
    // tier, another node that took over) or from the upstream under a lease taken over here.
    return resumableBody(source.body, async (offset) => {
      const fromTier = await shared?.open(req.digest, offset);
      if (fromTier) return fromTier.body;
      const got = await this.clusterOrUpstream(req, running.restricted, offset, signal);
      if (got.from === 'peer') return got.body;
      if (got.lease) {
        running.lease = got.lease;
        metrics.leases.inc({ result: 'taken_over' });
      }
      return countBytes(got.res.body, (n) => metrics.upstreamBytes.inc({ kind: 'blob', upstream: req.upstream.host }, n));
    }, resumeOpts);
  }

  /** Copy a committed local blob to the shared tier (verified already: it is committed). */
  private async publishLocal(digest: Digest, restricted: boolean): Promise<void> {
    const shared = this.opts.shared;
    const local = await this.opts.cache.open(digest).catch(() => undefined);
    if (!shared || !local) return;
    const upload = shared.upload(digest, local.size, { restricted, mediaType: 'application/octet-stream' });
    const buf = Buffer.allocUnsafe(PUBLISH_CHUNK_BYTES);
    try {
      for (let chunk = await local.source.read(buf); chunk; chunk = await local.source.read(buf)) await upload.write([Buffer.from(chunk)]);
    } catch (err) {
      this.opts.log.warn({ digest, err: (err as Error).message }, 'could not read the local copy for the shared tier');
      await upload.abort();
      return;
    } finally {
      local.source.close();
    }
    await upload.complete();
  }

  /** The cache cannot take a blob found in the shared tier or at a peer: stream the upstream's copy through, as for any miss then. */
  private async bypassOther(req: BlobRequest, body: AsyncIterable<Uint8Array>): Promise<BlobResponse> {
    destroyBody(body);
    return this.fetch(req, undefined);
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

function probe(req: BlobRequest): AccessProbe {
  return { blob: req.digest };
}

async function* countBytes(body: AsyncIterable<Uint8Array>, add: (n: number) => void): AsyncGenerator<Uint8Array> {
  for await (const chunk of body) {
    add(chunk.length);
    yield chunk;
  }
}

/** A wrapped body that can still be let go of (destroying the stream it reads). */
function withDestroy(body: AsyncIterable<Uint8Array>, inner: { destroy(): unknown }): AsyncIterable<Uint8Array> & { destroy(): void } {
  return Object.assign(body, { destroy: () => void inner.destroy() });
}

/** Let go of a body that will not be read (its connection goes back or closes). */
function destroyBody(body: AsyncIterable<Uint8Array>): void {
  (body as { destroy?: () => void }).destroy?.();
}
