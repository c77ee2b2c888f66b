import type { FileHandle } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import type { Digest } from '../oci/digest.ts';
import { RegistryError } from '../oci/errors.ts';
import type { CacheResult } from '../oci/headers.ts';
import type { Logger } from '../observability/logger.ts';
import type { Metrics } from '../observability/metrics.ts';
import type { ContentCache } from '../store/content-cache.ts';
import { headerString } from '../upstream/client.ts';
import { upstreamStatusToError } from '../upstream/upstream-error.ts';
import type { ResolvedTarget } from '../upstream/upstreams.ts';
import { Fill } from './fill.ts';
import type { AccessGuard } from '../auth/access-guard.ts';
import { isClientOwned, type ClientCredential } from '../auth/credentials.ts';

/** An in-flight fill and whether it was started with a client's own credential. */
type Inflight = { fill: Fill; restricted: boolean };
import { readErrorText } from './read-body.ts';

export type BlobRequest = ResolvedTarget & { digest: Digest; auth: ClientCredential };

export type OpenedBlob =
  | { source: 'file'; fh: FileHandle; size: number; result: CacheResult }
  | { source: 'fill'; fill: Fill; size: number | undefined; result: CacheResult };

/**
 * Pull-through blobs: local file, else join the in-flight fill, else start one.
 * A fill is owned by no client: it runs under its own deadline and the
 * shutdown signal, so the first requester leaving does not cancel it.
 */
export class PullThroughBlobs {
  private readonly inflight = new Map<Digest, Promise<Inflight>>();
  private readonly guard: AccessGuard;
  private readonly cache: ContentCache;
  private readonly metrics: Metrics;
  private readonly log: Logger;
  private readonly fillTimeoutMs: number;
  private readonly shutdown: AbortSignal;

  constructor(opts: { cache: ContentCache; guard: AccessGuard; metrics: Metrics; log: Logger; fillTimeoutMs: number; shutdown: AbortSignal }) {
    this.cache = opts.cache;
    this.guard = opts.guard;
    this.metrics = opts.metrics;
    this.log = opts.log;
    this.fillTimeoutMs = opts.fillTimeoutMs;
    this.shutdown = opts.shutdown;
  }

  async open(req: BlobRequest): Promise<OpenedBlob> {
    const local = await this.openLocal(req);
    if (local) return local;
    let pending = this.inflight.get(req.digest);
    let result: CacheResult = 'coalesced';
    if (!pending) {
      // A fill may have committed while we looked at the disk.
      const raced = this.cache.peek(req.digest) ? await this.openLocal(req) : undefined;
      if (raced) return raced;
      pending = this.startFill(req);
      this.inflight.set(req.digest, pending);
      pending.catch(() => this.inflight.delete(req.digest));
      result = 'miss';
    } else {
      // Never let a request ride along on a download made with someone else's credential unchecked.
      const { restricted } = await pending;
      if (restricted) await this.guard.check(req.upstream, req.remoteName, blobPath(req), req.auth);
    }
    const { fill } = await pending;
    return { source: 'fill', fill, size: fill.expectedSize, result };
  }

  /** A cached blob, after the access check if it is restricted; undefined on a miss. */
  private async openLocal(req: BlobRequest): Promise<OpenedBlob | undefined> {
    const entry = this.cache.peek(req.digest);
    if (!entry) return undefined;
    if (entry.restricted) await this.checkRestricted(req);
    const local = await this.cache.open(req.digest);
    return local ? { source: 'file', fh: local.fh, size: local.size, result: 'hit' } : undefined;
  }

  private async checkRestricted(req: BlobRequest): Promise<void> {
    await this.guard.check(req.upstream, req.remoteName, blobPath(req), req.auth);
    // Passing with Gantry's own auth means anyone Gantry admits may see it.
    if (!isClientOwned(req.auth)) await this.cache.markPublic(req.digest);
  }

  /** Stream [start, end) of an in-progress fill, counted as a waiter while it lasts. */
  readFill(fill: Fill, start: number, end: number | undefined): Readable {
    const reader = fill.createReader(start, end);
    this.metrics.inflightWaiters.inc();
    reader.once('close', () => this.metrics.inflightWaiters.dec());
    return reader;
  }

  /** HEAD never starts a download: local size, in-flight size, else the upstream's HEAD. */
  async head(req: BlobRequest): Promise<{ size: number | undefined; result: CacheResult }> {
    const entry = this.cache.peek(req.digest);
    if (entry && (await this.cache.files.size(req.digest)) !== undefined) {
      if (entry.restricted) await this.checkRestricted(req);
      return { size: entry.size, result: 'hit' };
    }
    const pending = this.inflight.get(req.digest);
    if (pending) {
      const { fill, restricted } = await pending;
      if (restricted) await this.guard.check(req.upstream, req.remoteName, blobPath(req), req.auth);
      if (fill.expectedSize !== undefined) return { size: fill.expectedSize, result: 'coalesced' };
    }
    const res = await req.upstream.request({ method: 'HEAD', path: blobPath(req), repo: req.remoteName, auth: req.auth });
    await res.body.dump();
    if (res.status !== 200) throw upstreamStatusToError('blob', res.status, '', res.headers);
    const len = Number(headerString(res.headers['content-length']));
    return { size: Number.isSafeInteger(len) && len >= 0 ? len : undefined, result: 'miss' };
  }

  private async startFill(req: BlobRequest): Promise<Inflight> {
    const signal = AbortSignal.any([this.shutdown, AbortSignal.timeout(this.fillTimeoutMs)]);
    const res = await req.upstream.request({ method: 'GET', path: blobPath(req), repo: req.remoteName, auth: req.auth, signal });
    const restricted = isClientOwned(req.auth);
    if (res.status !== 200) {
      throw upstreamStatusToError('blob', res.status, await readErrorText(res.body), res.headers);
    }
    const len = Number(headerString(res.headers['content-length']));
    const expectedSize = Number.isSafeInteger(len) && len >= 0 ? len : undefined;
    const upstreamHost = req.upstream.host;
    let fill: Fill;
    try {
      fill = await Fill.create({
        digest: req.digest,
        expectedSize,
        tempPath: this.cache.files.newTempPath(),
        finalPath: this.cache.files.pathFor(req.digest),
        commit: async (tempPath, size) => {
          await this.cache.files.commit(tempPath, req.digest);
          const now = Date.now();
          await this.cache.add(req.digest, {
            kind: 'blob', size, mediaType: 'application/octet-stream', upstream: upstreamHost,
            repo: req.remoteName, createdAt: now, lastAccess: now, hits: 0, restricted,
          });
        },
      });
    } catch (err) {
      res.body.destroy();
      throw new RegistryError('UNAVAILABLE', { message: 'cannot write to the cache', cause: err });
    }
    this.metrics.inflightFills.inc();
    const started = performance.now();
    void fill.run(countBytes(res.body, (n) => this.metrics.upstreamBytes.inc({ kind: 'blob', upstream: upstreamHost }, n))).then((outcome) => {
      this.inflight.delete(req.digest);
      this.metrics.inflightFills.dec();
      this.metrics.fills.inc({ outcome });
      const fields = { digest: req.digest, upstream: upstreamHost, repo: req.remoteName, bytes: fill.written, durationMs: Math.round(performance.now() - started) };
      if (outcome === 'committed') this.log.info(fields, 'blob fill committed');
      else this.log.error({ ...fields, outcome, err: fill.error?.message }, 'blob fill failed; nothing cached');
    });
    return { fill, restricted };
  }
}

function blobPath(req: BlobRequest): string {
  return `/v2/${req.remoteName}/blobs/${req.digest}`;
}

async function* countBytes(body: AsyncIterable<Uint8Array>, add: (n: number) => void): AsyncGenerator<Uint8Array> {
  for await (const chunk of body) {
    add(chunk.length);
    yield chunk;
  }
}
