import type { Digest } from '../oci/digest.ts';
import type { ContentCache } from '../store/content-cache.ts';
import type { PinRecord } from '../store/index-store.ts';
import { ImportError, type ArchiveSource } from './archive-source.ts';
import { scanArchive } from './archive-scan.ts';
import { planImport, type ImportPlan, type PlanOptions, type PlannedBlob } from './import-plan.ts';
import { imageDigests, pinRecordOf } from './pins.ts';

/** The part of the cache an import writes through: ingest is the one verified write path. */
export type ImportCache = Pick<ContentCache, 'stat' | 'ingest' | 'ingestBytes' | 'putTag' | 'pin' | 'unpin' | 'pins'>;

/**
 * Where images land. `upstream`: the upstream named with --upstream, or the default one. When
 * --upstream was not given, `byRegistry` lists the configured upstream hosts: an image whose name
 * gives one of them (`ghcr.io/org/app:1.2`, as `gantry export` writes it) lands under that
 * upstream, the rest under `upstream`. Without it, a mixed archive's images would all land under
 * the default upstream and a client asking `ghcr.io` for them would miss.
 * `pin`: keep every imported image out of eviction (a pin per tag, or per digest if untagged).
 */
export type ImportTarget = PlanOptions & { upstream: string; byRegistry?: readonly string[]; pin?: boolean };

/** The upstream host an image (or blob, manifest) named with `registry` lands under. */
export function upstreamFor(target: ImportTarget, registry: string | undefined): string {
  return registry !== undefined && target.byRegistry?.includes(registry) === true ? registry : target.upstream;
}
/** Bytes read so far of the current pass (`pass` 1 hashes and checks, pass 2 writes). */
export type ImportProgress = (e: { pass: 1 | 2; bytes: number }) => void;

/** `upstream` is set when the image's own name chose it (not the --upstream / default one). */
export type ImportedImage = { repository: string; tag?: string; digest: Digest; mediaType: string; authored: boolean; upstream?: string; pinned?: boolean };
export type ImportSummary = {
  archive: string;
  format: ImportPlan['format'];
  images: ImportedImage[];
  blobsNew: number;
  blobsPresent: number;
  bytesNew: number;
  manifests: number;
};

/**
 * Import one archive into the cache. Two passes: the first hashes every entry and checks the
 * whole archive (paths, links, truncation, digests, references) without writing; the second
 * writes the blobs through ContentCache.ingest (verified again as written), then the manifests,
 * then the tags. Bad input therefore leaves nothing of the archive in the cache.
 */
export async function importArchive(source: ArchiveSource, cache: ImportCache, target: ImportTarget, progress: ImportProgress = () => undefined): Promise<ImportSummary> {
  let read = 0;
  const scan = await scanArchive(source, (n) => progress({ pass: 1, bytes: (read += n) }));
  const plan = planImport(source.label, scan, target);
  const summary: ImportSummary = { archive: source.label, format: plan.format, images: [], blobsNew: 0, blobsPresent: 0, bytesNew: 0, manifests: plan.manifests.length };
  const undoPins = await pinFirst(cache, target.pin === true ? pinsOf(plan, target) : []);
  try {
    await writeAll(source, cache, plan, target, summary, progress);
  } catch (err) {
    await undoPins();
    throw err;
  }
  for (const img of plan.images) {
    const upstream = upstreamFor(target, img.registry);
    if (img.tag !== undefined) {
      await cache.putTag(upstream, img.repository, img.tag, { digest: img.digest, mediaType: img.mediaType, size: img.size, checkedAt: Date.now(), restricted: false });
    }
    summary.images.push({
      repository: img.repository,
      ...(img.tag !== undefined ? { tag: img.tag } : {}),
      digest: img.digest,
      mediaType: img.mediaType,
      authored: img.authored,
      ...(upstream !== target.upstream ? { upstream } : {}),
      ...(target.pin === true ? { pinned: true } : {}),
    });
  }
  return summary;
}

/** Pass 2: the blobs the cache lacks, then every manifest. */
async function writeAll(source: ArchiveSource, cache: ImportCache, plan: ImportPlan, target: ImportTarget, summary: ImportSummary, progress: ImportProgress): Promise<void> {
  const wanted = new Map<string, PlannedBlob>();
  for (const b of plan.blobs) {
    if (await cache.stat(b.digest)) summary.blobsPresent++;
    else wanted.set(b.entry, b);
  }
  let read = 0;
  await source.forEachFile(async (name, _size, body) => {
    const blob = wanted.get(name);
    if (!blob) {
      for await (const chunk of body) progress({ pass: 2, bytes: (read += chunk.length) });
      return;
    }
    wanted.delete(name);
    await writeBlob(cache, blob, body, { file: source.label, upstream: upstreamFor(target, blob.registry) }, (n) => progress({ pass: 2, bytes: (read += n) }));
    summary.blobsNew++;
    summary.bytesNew += blob.size;
  });
  const missing = wanted.keys().next();
  if (!missing.done) throw new ImportError(source.label, missing.value, 'changed between the two passes over the archive');
  for (const m of plan.manifests) {
    await cache.ingestBytes(m.digest, m.bytes, { kind: 'manifest', mediaType: m.mediaType, upstream: upstreamFor(target, m.registry), repo: m.repository, restricted: false });
  }
}

/** One pin per imported image: the tag it lands under (its digest if untagged) and everything it consists of. */
function pinsOf(plan: ImportPlan, target: ImportTarget): PinRecord[] {
  const manifests = new Map(plan.manifests.map((m) => [m.digest, m.bytes]));
  const pinnedAt = Date.now();
  return plan.images.map((img) => ({ upstream: upstreamFor(target, img.registry), repo: img.repository, reference: img.tag ?? img.digest, digests: imageDigests(img.digest, manifests), pinnedAt }));
}

/**
 * Pin before writing: the cache keeps pinned digests that are not there yet once they arrive, so
 * under a budget smaller than the archive the import's later blobs cannot evict its earlier ones.
 * Resolves to the undo for a failed import: each reference's earlier pin back, or none.
 */
async function pinFirst(cache: ImportCache, pins: readonly PinRecord[]): Promise<() => Promise<void>> {
  if (pins.length === 0) return () => Promise.resolve();
  const before = cache.pins();
  for (const p of pins) await cache.pin(p);
  return async () => {
    for (const p of pins) {
      const earlier = before.find((b) => b.upstream === p.upstream && b.repo === p.repo && b.reference === p.reference);
      if (earlier) await cache.pin(pinRecordOf(earlier));
      else await cache.unpin(p.upstream, p.repo, p.reference);
    }
  };
}

/** Stream one entry into a cache writer; its commit checks size and digest, a failure leaves nothing. */
async function writeBlob(cache: ImportCache, blob: PlannedBlob, body: AsyncIterable<Buffer>, at: { file: string; upstream: string }, onBytes: (n: number) => void): Promise<void> {
  const writer = await cache.ingest(blob.digest, { kind: 'blob', mediaType: 'application/octet-stream', upstream: at.upstream, repo: blob.repository, restricted: false });
  try {
    for await (const chunk of body) {
      await writer.write([chunk]);
      onBytes(chunk.length);
    }
    await writer.commit(blob.size);
  } catch (err) {
    await writer.abort();
    throw err instanceof ImportError ? err : new ImportError(at.file, blob.entry, (err as Error).message);
  } finally {
    await writer.close();
  }
}
