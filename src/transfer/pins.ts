import type { Digest } from '../oci/digest.ts';
import { formatImageRef, parseImageRef } from '../oci/image-ref.ts';
import { parseManifest, referencedDigests } from '../oci/manifest.ts';
import type { RepositoryName, Tag } from '../oci/reference.ts';
import type { ContentCache, PinStatus } from '../store/content-cache.ts';
import type { PinRecord } from '../store/index-store.ts';
import { locateImage, type UpstreamNames } from './image-location.ts';

/**
 * Pins as users see them, the same whether `gantry pins` reads a stopped cache or a running
 * Gantry's `GET /admin/pins`: `ref` is an image reference that `gantry unpin` takes back.
 */
export type PinView = {
  ref: string;
  upstream: string;
  repository: string;
  reference: string;
  /** How many digests the image consists of (manifests, configs, layers). */
  digests: number;
  cachedDigests: number;
  /** Bytes of those digests in the cache now. */
  bytes: number;
  /** ISO 8601. */
  pinnedAt: string;
};

/** A ref that cannot be released: `invalid` does not parse, `unknown` names no pin. The message names the ref. */
export class PinError extends Error {
  readonly kind: 'invalid' | 'unknown';
  constructor(kind: 'invalid' | 'unknown', message: string) {
    super(message);
    this.kind = kind;
  }
}

export type PinCache = Pick<ContentCache, 'pins' | 'unpin'>;

export function pinView(p: PinStatus): PinView {
  return {
    ref: pinRef(p),
    upstream: p.upstream,
    repository: p.repo,
    reference: p.reference,
    digests: new Set(p.digests).size,
    cachedDigests: p.cachedDigests,
    bytes: p.bytes,
    pinnedAt: new Date(p.pinnedAt).toISOString(),
  };
}

/** Every pin, ordered by ref so listings are stable. */
export function listPins(cache: Pick<ContentCache, 'pins'>): PinView[] {
  return cache.pins().map(pinView).sort((a, b) => a.ref.localeCompare(b.ref));
}

/**
 * Release the pin `raw` names, an image reference as `docker pull` takes it, resolved to an
 * upstream and repository the way export resolves it; a tag is tried before a digest. Resolves to
 * the pin as it was; throws PinError naming `raw`.
 */
export async function releasePin(raw: string, cache: PinCache, config: UpstreamNames): Promise<PinView> {
  let ref;
  try {
    ref = parseImageRef(raw);
  } catch (err) {
    throw new PinError('invalid', (err as Error).message);
  }
  const where = locateImage(ref, config);
  if (!where) throw new PinError('unknown', `${raw} is not pinned (no upstream is configured for ${ref.registry})`);
  const references = [ref.tag, ref.digest].filter((r): r is NonNullable<typeof r> => r !== undefined);
  const pins = cache.pins();
  for (const repo of where.repositories) {
    for (const reference of references) {
      const found = pins.find((p) => p.upstream === where.upstream && p.repo === repo && p.reference === reference);
      if (found && (await cache.unpin(found.upstream, found.repo, found.reference))) return pinView(found);
    }
  }
  throw new PinError('unknown', `${raw} is not pinned`);
}

/**
 * Every digest an image consists of: its root, an index's child manifests, each image's config
 * and layers. `manifests` holds the manifest bytes by digest; a digest absent from it is a blob.
 */
export function imageDigests(root: Digest, manifests: ReadonlyMap<Digest, Buffer>): Digest[] {
  const out = new Set<Digest>();
  const walk = (d: Digest): void => {
    if (out.has(d)) return;
    out.add(d);
    const bytes = manifests.get(d);
    if (bytes) for (const child of referencedDigests(parseManifest(bytes))) walk(child);
  };
  walk(root);
  return [...out];
}

/** The record without the listing's status fields, as the index stores it. */
export function pinRecordOf(p: PinStatus): PinRecord {
  return { upstream: p.upstream, repo: p.repo, reference: p.reference, digests: p.digests, pinnedAt: p.pinnedAt };
}

/** `upstream/repo:tag` or `upstream/repo@digest`: parseImageRef reads the upstream host back as the registry. */
function pinRef(p: PinRecord): string {
  const isDigest = p.reference.includes(':');
  return formatImageRef({ registry: p.upstream, repository: p.repo as RepositoryName, ...(isDigest ? { digest: p.reference as Digest } : { tag: p.reference as Tag }) });
}
