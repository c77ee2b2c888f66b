import type { FileHandle } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { isClientOwned, type ClientCredential } from '../auth/credentials.ts';
import type { Digest } from '../oci/digest.ts';
import { RegistryError } from '../oci/errors.ts';
import type { CacheResult } from '../oci/headers.ts';
import type { Logger } from '../observability/logger.ts';
import type { Metrics } from '../observability/metrics.ts';
import type { ContentCache } from '../store/content-cache.ts';
import type { BlobResponse } from '../upstream/registry-api.ts';
import type { ResolvedTarget } from '../upstream/upstreams.ts';
import type { AccessGuard, AccessProbe } from './access-guard.ts';
import { FileSource, onClose, type BufferPlan, type ChunkSource } from './chunk-source.ts';
import { Fill } from './fill.ts';
import { resumableBody } from './resumable-body.ts';
import { Semaphore } from './semaphore.ts';
import { createVerifyingStream } from './verifying-stream.ts';

export type BlobRequest = ResolvedTarget & { digest: Digest; auth: ClientCredential };

export type OpenedBlob =
  | { source: 'file'; fh: FileHandle; size: number; result: CacheResult }
  /** A small cached blob, served from memory (config blobs, small layers: most requests of a pull). */
  | { source: 'memory'; bytes: Buffer; size: number; result: CacheResult }
  | { source: 'fill'; fill: Fill; size: number | undefined; result: CacheResult }
  /** Cache bypassed (disk trouble): verified bytes straight from the upstream. */
  | { source: 'stream'; body: Readable; size: number | undefined; result: CacheResult };

const FEW_STREAMS = 8;
const BIG_BUFFERS: BufferPlan = { count: 3, bytes: 1024 * 1024 };
// Two: one being written by the socket while the next is read (50 readers of one fill: 6 MiB).
const SMALL_BUFFERS: BufferPlan = { count: 2, bytes: 64 * 1024 };
const HOT_BLOB_MAX_BYTES = 1024 * 1024;

/** An in-flight fill and whether it was started with a client's own credential. */
type Inflight = { fill: Fill; restricted: boolean };

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
  private fileStreams = 0;

  constructor(opts: PullThroughBlobsOptions) {
    this.opts = opts;
    this.fillSlots = new Semaphore(opts.maxConcurrentFills, opts.fillQueueTimeoutMs);
  }

  async open(req: BlobRequest): Promise<OpenedBlob> {
    const local = await this.openLocal(req);
    if (local) return local;
    let pending = this.inflight.get(req.digest);
    let result: CacheResult = 'coalesced';
    if (!pending) {
      // A fill may have committed while we looked at the disk.
      const raced = this.opts.cache.peek(req.digest) ? await this.openLocal(req) : undefined;
      if (raced) return raced;
      if (Date.now() < this.diskTroubleUntil) return this.streamThrough(req, await this.fetch(req, undefined));
      pending = this.startFill(req);
      this.inflight.set(req.digest, pending);
      pending.catch(() => this.inflight.delete(req.digest));
      result = 'miss';
    } else {
      // Never let a request ride along on a download made with someone else's credential unchecked.
      const { restricted } = await pending;
      if (restricted) await this.opts.guard.check(req.upstream, req.remoteName, probe(req), req.auth);
    }
    let started: Inflight;
    try {
      started = await pending;
    } catch (err) {
      if (err instanceof BypassSignal) return this.streamThrough(req, err.res);
      throw err;
    }
    return { source: 'fill', fill: started.fill, size: started.fill.expectedSize, result };
  }

  /**
   * Bytes [start, end) of a cached blob, and the buffers to serve it with:
   * large when few clients stream (fewer syscalls for one big pull), small
   * under fan-out, so many clients don't multiply into hundreds of MiB.
   */
  readFile(fh: FileHandle, start: number, end: number): { source: ChunkSource; plan: BufferPlan } {
    const plan = this.fileStreams < FEW_STREAMS ? BIG_BUFFERS : SMALL_BUFFERS;
    this.fileStreams += 1;
    return { source: onClose(new FileSource(fh, start, end), () => (this.fileStreams -= 1)), plan };
  }

  /** Bytes [start, end) of an in-progress fill, counted as a waiter while it lasts. */
  readFill(fill: Fill, start: number, end: number | undefined): { source: ChunkSource; plan: BufferPlan } {
    const waiters = this.opts.metrics.inflightWaiters;
    waiters.inc();
    return { source: onClose(fill.openSource(start, end), () => waiters.dec()), plan: SMALL_BUFFERS };
  }

  /** HEAD never starts a download: local size, in-flight size, else the upstream's HEAD. */
  async head(req: BlobRequest): Promise<{ size: number | undefined; result: CacheResult }> {
    const entry = this.opts.cache.peek(req.digest);
    if (entry && (await this.opts.cache.files.size(req.digest)) !== undefined) {
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
  private async openLocal(req: BlobRequest): Promise<OpenedBlob | undefined> {
    const entry = this.opts.cache.peek(req.digest);
    if (!entry) return undefined;
    if (entry.restricted) await this.checkRestricted(req);
    if (entry.size <= HOT_BLOB_MAX_BYTES) {
      const whole = await this.opts.cache.readWhole(req.digest);
      return whole ? { source: 'memory', bytes: whole.bytes, size: whole.bytes.length, result: 'hit' } : undefined;
    }
    const local = await this.opts.cache.open(req.digest);
    return local ? { source: 'file', fh: local.fh, size: local.size, result: 'hit' } : undefined;
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

  private streamThrough(req: BlobRequest, res: BlobResponse): OpenedBlob {
    const size = res.size;
    const body = res.body.pipe(createVerifyingStream(req.digest, size));
    res.body.on('error', (err) => body.destroy(err));
    res.body.on('data', (chunk: Buffer) => this.opts.metrics.upstreamBytes.inc({ kind: 'blob', upstream: req.upstream.host }, chunk.length));
    return { source: 'stream', body, size, result: 'bypass' };
  }

  private async startFill(req: BlobRequest): Promise<Inflight> {
    const release = await this.fillSlots.acquire();
    let handedOver = false;
    try {
      const signal = AbortSignal.any([this.opts.shutdown, AbortSignal.timeout(this.opts.fillTimeoutMs)]);
      const res = await this.fetch(req, signal);
      const restricted = isClientOwned(req.auth);
      const expectedSize = res.size;
      const upstreamHost = req.upstream.host;
      const { cache, metrics, log } = this.opts;
      let fill: Fill;
      try {
        fill = await Fill.create({
          digest: req.digest,
          expectedSize,
          tempPath: cache.files.newTempPath(),
          finalPath: cache.files.pathFor(req.digest),
          commit: async (tempPath, size) => {
            await cache.files.commit(tempPath, req.digest);
            const now = Date.now();
            await cache.add(req.digest, {
              kind: 'blob', size, mediaType: 'application/octet-stream', upstream: upstreamHost,
              repo: req.remoteName, createdAt: now, lastAccess: now, hits: 0, restricted,
            });
          },
        });
      } catch (err) {
        // Can't even open a temp file: stream this one through and stop trying for a while.
        this.diskTrouble(err);
        throw new BypassSignal(res);
      }
      metrics.inflightFills.inc();
      const started = performance.now();
      const body = resumableBody(res.body, async (offset) => (await this.fetch(req, signal, offset)).body, {
        maxResumes: this.opts.fillResumeAttempts, signal, log, onResume: () => metrics.fillResumes.inc(),
      });
      handedOver = true;
      void fill.run(countBytes(body, (n) => metrics.upstreamBytes.inc({ kind: 'blob', upstream: upstreamHost }, n))).then((outcome) => {
        this.inflight.delete(req.digest);
        release();
        metrics.inflightFills.dec();
        metrics.fills.inc({ outcome });
        const fields = { digest: req.digest, upstream: upstreamHost, repo: req.remoteName, bytes: fill.written, durationMs: Math.round(performance.now() - started) };
        if (outcome === 'committed') {
          log.info(fields, 'blob fill committed');
          if (this.diskTroubleUntil > 0) this.diskRecovered();
        } else {
          log.error({ ...fields, outcome, err: fill.error?.message }, 'blob fill failed; nothing cached');
          if (outcome === 'write_error') this.diskTrouble(fill.error);
        }
      });
      return { fill, restricted };
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

/** Thrown inside startFill when the cache can't take the blob; carries the open upstream response. */
class BypassSignal extends Error {
  readonly res: BlobResponse;
  constructor(res: BlobResponse) {
    super('cache bypass');
    this.res = res;
  }
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
