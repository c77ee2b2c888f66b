import { isClientOwned } from '../auth/credentials.ts';
import type { Digest } from '../oci/digest.ts';
import type { Logger } from '../observability/logger.ts';
import type { Metrics } from '../observability/metrics.ts';
import type { BlobWriter } from '../store/blob-store-api.ts';
import type { ContentCache } from '../store/content-cache.ts';
import { teeToShared, type SharedTier } from '../store/shared-tier.ts';
import type { Coordinator, FillLease, LeaseHolder } from '../cluster/coordinator.ts';
import { openPeerBlob } from '../cluster/peer-client.ts';
import { setTimeout as sleep } from 'node:timers/promises';
import type { BlobResponse } from '../upstream/registry-api.ts';
import type { TransferPriority } from '../upstream/rate-limiter.ts';
import type { AccessGuard } from './access-guard.ts';
import { fetchBlob, probe, type BlobRequest } from './blob-request.ts';
import { resumableBody } from './resumable-body.ts';

/** The cluster's lease on a download, held by this node until the shared tier has the blob. */
export type Lease = { release(): Promise<void> };
/** Where a fill's bytes come from (see FillSources.open). */
export type FillSource =
  | { from: 'shared' | 'peer'; size: number | undefined; restricted: boolean; body: AsyncIterable<Uint8Array> }
  | { from: 'upstream'; size: number | undefined; restricted: boolean; res: BlobResponse; lease: Lease | undefined };
/** A blob missing here and in the shared tier: a peer's stream, or the upstream's answer (with this node's lease, if taken). */
type ClusterSource =
  | { from: 'peer'; holder: LeaseHolder; size: number | undefined; body: AsyncIterable<Uint8Array> }
  | { from: 'upstream'; res: BlobResponse; lease: Lease | undefined };
/**
 * The terms a running fill's bytes are read under: `priority` is read by the upstream's bandwidth
 * limiters at each chunk, and `lease` is set when this node takes the download over from a peer
 * that went away.
 */
export type FillTerms = { restricted: boolean; priority: TransferPriority; lease?: Lease | undefined };
/** How long a follower waits for a dead lease holder's lease to expire before it downloads alone (the lease lives 6 s). */
const LEASE_WAIT_MS = 8_000;
const LEASE_POLL_MS = 250;
/** Reads of a local copy being published to the shared tier. */
const PUBLISH_CHUNK_BYTES = 1024 * 1024;

export type FillSourcesOptions = {
  cache: ContentCache;
  guard: AccessGuard;
  metrics: Metrics;
  log: Logger;
  fillResumeAttempts: number;
  /** Content shared with other nodes (S3), looked in before the upstream; none for a node alone. */
  shared?: SharedTier | undefined;
  /** The nodes sharing a cache: one download per blob for all of them (cluster/); none for a node alone. */
  cluster?: { coordinator: Coordinator; peerToken: string } | undefined;
};

/**
 * Where the bytes of a fill (proxy/blobs.ts) come from, and how they are resumed when cut: the
 * shared tier, the node downloading the blob for the cluster, or the upstream under the cluster's
 * lease. Also how the shared tier gets a copy of what this node fetched.
 */
export class FillSources {
  private readonly opts: FillSourcesOptions;

  constructor(opts: FillSourcesOptions) {
    this.opts = opts;
  }

  /**
   * Where a fill's bytes come from: the shared tier when it has the blob, else the node already
   * downloading it for the cluster, else the upstream (under the cluster's lease when there is
   * one). Restricted content from the tier or a peer is served only after the same access check
   * a local hit gets.
   */
  async open(req: BlobRequest, signal: AbortSignal): Promise<FillSource> {
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

  /**
   * The cache cannot take the blob: the upstream's answer to stream through, as for any miss then.
   * One found in the shared tier or at a peer is let go of and fetched upstream instead.
   */
  async bypass(req: BlobRequest, source: FillSource): Promise<BlobResponse> {
    if (source.from !== 'upstream') {
      destroyBody(source.body);
      return fetchBlob(req, undefined);
    }
    void source.lease?.release();
    return source.res;
  }

  /**
   * The writer a fill runs on. Fetched upstream: the shared tier gets a copy, published once the
   * local commit verified it (`onPublished` gets that upload's completion); the cluster's lease is
   * held until then, so no node goes upstream for it in between.
   */
  withSharedCopy(req: BlobRequest, source: FillSource, writer: BlobWriter, onPublished: (p: Promise<void>) => void): BlobWriter {
    if (source.from !== 'upstream' || !this.opts.shared) return writer;
    const upload = this.opts.shared.upload(req.digest, source.size, { restricted: source.restricted, mediaType: 'application/octet-stream' });
    return teeToShared(writer, upload, onPublished);
  }

  /** The bytes a fill runs on: resumed from where they were cut (Range), upstream ones paced and counted. */
  body(req: BlobRequest, source: FillSource, signal: AbortSignal, terms: FillTerms): AsyncIterable<Uint8Array> {
    const { metrics, log, shared } = this.opts;
    const resumeOpts = { maxResumes: this.opts.fillResumeAttempts, signal, log, onResume: () => metrics.fillResumes.inc() };
    if (source.from === 'upstream') {
      const upstreamHost = req.upstream.host;
      const body = resumableBody(source.res.body, async (offset) => (await fetchBlob(req, signal, offset)).body, resumeOpts);
      const paced = req.upstream.throttle(body, () => terms.priority);
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
      const got = await this.clusterOrUpstream(req, terms.restricted, offset, signal);
      if (got.from === 'peer') return got.body;
      if (got.lease) {
        terms.lease = got.lease;
        metrics.leases.inc({ result: 'taken_over' });
      }
      return countBytes(got.res.body, (n) => metrics.upstreamBytes.inc({ kind: 'blob', upstream: req.upstream.host }, n));
    }, resumeOpts);
  }

  /** Copy a committed local blob to the shared tier (verified already: it is committed). */
  async publishLocal(digest: Digest, restricted: boolean): Promise<void> {
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
        const res = await fetchBlob(req, signal, offset);
        return { from: 'upstream', res, lease: lease.kind === 'mine' ? lease : undefined };
      } catch (err) {
        if (lease.kind === 'mine') await lease.release();
        throw err;
      }
    }
  }
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
