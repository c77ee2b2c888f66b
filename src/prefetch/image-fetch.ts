import pLimit from 'p-limit';
import type { ClientCredential } from '../auth/credentials.ts';
import type { Digest } from '../oci/digest.ts';
import type { ImageRef } from '../oci/image-ref.ts';
import { formatPlatform, parseManifest, platformMatches, type Descriptor, type ParsedManifest, type Platform } from '../oci/manifest.ts';
import { parseTag, type Reference } from '../oci/reference.ts';
import type { PullThroughBlobs, Warming } from '../proxy/blobs.ts';
import type { PullThroughManifests } from '../proxy/manifests.ts';
import type { ContentCache } from '../store/content-cache.ts';
import type { ResolvedTarget } from '../upstream/upstreams.ts';

/** Blobs of one image fetched at once: enough to fill a thin link, few enough to leave fill slots to clients. */
const BLOBS_IN_PARALLEL = 3;

/** Prefetch speaks for Gantry itself: its own upstream credentials, never a client's. */
const GANTRY: ClientCredential = { kind: 'none' };

export type ImageFetchDeps = { manifests: PullThroughManifests; blobs: PullThroughBlobs; cache: ContentCache };
export type ImageFetchOptions = { platforms: readonly Platform[]; pin: boolean };

/**
 * One image of a prefetch job: its manifest (and, from an index, only the wanted platforms'
 * manifests), then every blob they name, through the same pull-through paths clients use, so
 * what is cached or being fetched is never fetched again. Progress is readable while it runs.
 */
export class ImageFetch {
  digest: Digest | undefined;
  blobs = 0;
  blobsDone = 0;
  bytes = 0;
  private bytesCompleted = 0;
  private readonly active = new Set<Warming>();
  private readonly target: ResolvedTarget;
  private readonly ref: ImageRef;
  private readonly opts: ImageFetchOptions;
  private readonly deps: ImageFetchDeps;

  constructor(target: ResolvedTarget, ref: ImageRef, opts: ImageFetchOptions, deps: ImageFetchDeps) {
    this.target = target;
    this.ref = ref;
    this.opts = opts;
    this.deps = deps;
  }

  /** Bytes of this image's blobs in the cache so far, counting fills still running. */
  bytesDone(): number {
    let n = this.bytesCompleted;
    for (const w of this.active) n += w.written();
    return n;
  }

  /** Throws an Error saying what failed (which manifest or blob, and why); `signal` stops it between steps. */
  async run(signal: AbortSignal): Promise<void> {
    const reference: Reference = this.ref.digest ? { kind: 'digest', digest: this.ref.digest } : { kind: 'tag', tag: this.ref.tag ?? parseTag('latest') };
    const root = await this.manifest(reference, 'manifest', signal);
    this.digest = root.digest;
    const children = root.parsed.kind === 'index' ? await this.children(root.parsed, signal) : [];
    const images = root.parsed.kind === 'image' ? [root.parsed] : children.flatMap((c) => (c.parsed.kind === 'image' ? [c.parsed] : []));
    const blobs = uniqueBlobs(images);
    this.blobs = blobs.length;
    this.bytes = blobs.reduce((n, b) => n + b.size, 0);
    if (this.opts.pin) await this.pin([root.digest, ...children.map((c) => c.digest), ...blobs.map((b) => b.digest)]);
    const limit = pLimit(BLOBS_IN_PARALLEL);
    // The first failure fails the image: blobs not started yet are dropped (fills running go on; they are shared).
    await Promise.all(blobs.map((b) => limit(() => this.blob(b, signal)))).catch((err: unknown) => {
      limit.clearQueue();
      throw err;
    });
  }

  private async children(index: Extract<ParsedManifest, { kind: 'index' }>, signal: AbortSignal): Promise<Array<{ digest: Digest; parsed: ParsedManifest }>> {
    const wanted = this.opts.platforms.length === 0 ? index.manifests : index.manifests.filter((d) => this.opts.platforms.some((p) => platformMatches(d.platform, p)));
    if (wanted.length === 0) {
      const has = index.manifests.map((d) => (d.platform ? formatPlatform(d.platform) : d.digest)).join(', ');
      throw new Error(`no manifest for ${this.opts.platforms.map(formatPlatform).join(', ')} in its index (has ${has})`);
    }
    const out: Array<{ digest: Digest; parsed: ParsedManifest }> = [];
    for (const d of wanted) {
      signal.throwIfAborted();
      out.push(await this.manifest({ kind: 'digest', digest: d.digest }, `manifest ${d.digest}${d.platform ? ` (${formatPlatform(d.platform)})` : ''}`, signal));
    }
    return out;
  }

  private async manifest(reference: Reference, what: string, signal: AbortSignal): Promise<{ digest: Digest; parsed: ParsedManifest }> {
    try {
      const got = await untilAborted(this.deps.manifests.get({ ...this.target, reference, accept: [], auth: GANTRY, headOnly: false }), signal);
      if (!got.bytes) throw new Error('no manifest body');
      return { digest: got.digest, parsed: parseManifest(got.bytes) };
    } catch (err) {
      throw new Error(`${what}: ${(err as Error).message}`, { cause: err });
    }
  }

  private async blob(d: Descriptor, signal: AbortSignal): Promise<void> {
    signal.throwIfAborted();
    let warming: Warming | undefined;
    try {
      warming = await untilAborted(this.deps.blobs.warm({ ...this.target, digest: d.digest, auth: GANTRY }), signal);
      this.active.add(warming);
      await untilAborted(warming.done, signal);
    } catch (err) {
      throw new Error(`blob ${d.digest}: ${(err as Error).message}`, { cause: err });
    } finally {
      if (warming) this.active.delete(warming);
    }
    this.blobsDone += 1;
    this.bytesCompleted += warming.size ?? d.size;
  }

  /** Pinned before the blobs arrive, so a large prefetch is not evicted while it runs. */
  private async pin(digests: Digest[]): Promise<void> {
    await this.deps.cache.pin({
      upstream: this.target.upstream.host,
      repo: this.target.remoteName,
      reference: this.ref.tag ?? this.digest ?? '',
      digests: [...new Set(digests)],
      pinnedAt: Date.now(),
    });
  }
}

/** Config and layers of every image, once each; foreign (non-distributable) layers are not in the registry and are skipped. */
function uniqueBlobs(images: ReadonlyArray<Extract<ParsedManifest, { kind: 'image' }>>): Descriptor[] {
  const seen = new Map<Digest, Descriptor>();
  for (const image of images) {
    for (const d of [image.config, ...image.layers]) {
      if (/\.foreign\.|nondistributable/.test(d.mediaType)) continue;
      if (!seen.has(d.digest)) seen.set(d.digest, d);
    }
  }
  return [...seen.values()];
}

/**
 * Stop waiting when `signal` aborts: a manifest request or a wait for a fill slot can take up to
 * its own timeout, and a shutdown should not. (The work itself goes on or ends on its own.)
 */
function untilAborted<T>(work: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) {
    work.catch(() => undefined);
    return Promise.reject(signal.reason as Error);
  }
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(signal.reason as Error);
    signal.addEventListener('abort', onAbort, { once: true });
    work.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        resolve(v);
      },
      (err: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(err as Error);
      },
    );
  });
}
