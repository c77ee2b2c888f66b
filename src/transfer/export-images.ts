import type { Writable } from 'node:stream';
import type { Config } from '../config/config.ts';
import type { Digest } from '../oci/digest.ts';
import { formatImageRef, parseImageRef, type ImageRef } from '../oci/image-ref.ts';
import type { Platform } from '../oci/manifest.ts';
import { toReadable } from '../store/chunk-source.ts';
import type { ContentCache } from '../store/content-cache.ts';
import { writeArchive } from './export-archive.ts';
import { locateImage, type ImageLocation } from './image-location.ts';
import { ExportError, planExport, type ExportPlan, type ExportRoot } from './export-plan.ts';

export type ExportRequest = { refs: readonly string[]; platforms: readonly Platform[] };
export type ExportSummary = { images: number; blobs: number; bytes: number };

/**
 * The cached images `refs` name, as roots for planExport; an ExportError names the first one that
 * is not cached. Refs without a registry (Docker Hub names) resolve to the default upstream.
 */
export async function resolveRoots(refs: readonly string[], cache: ContentCache, config: Pick<Config, 'upstreams' | 'defaultUpstream'>): Promise<ExportRoot[]> {
  const roots: ExportRoot[] = [];
  for (const raw of refs) {
    const ref = parseImageRef(raw);
    const where = locateImage(ref, config);
    if (!where) throw new ExportError(`${formatImageRef(ref)}: no upstream is configured for ${ref.registry}`);
    const digest = ref.digest ?? (await taggedDigest(ref, where, cache));
    const found = await cache.readWhole(digest);
    if (!found || found.entry.kind !== 'manifest') throw new ExportError(`${raw}: manifest ${digest} is not cached`);
    roots.push({ name: nameOf(ref), digest, bytes: found.bytes });
  }
  return roots;
}

/** Plan the whole archive before writing a byte, so a missing manifest fails before any output. */
export async function planFromCache(req: ExportRequest, cache: ContentCache, config: Pick<Config, 'upstreams' | 'defaultUpstream'>): Promise<ExportPlan> {
  const roots = await resolveRoots(req.refs, cache, config);
  const plan = await planExport(roots, req.platforms, async (d) => {
    const found = await cache.readWhole(d);
    return found?.entry.kind === 'manifest' ? found.bytes : undefined;
  });
  for (const blob of plan.blobs) {
    if (!blob.bytes && !(await cache.stat(blob.digest))) throw new ExportError(`blob ${blob.digest} (${blob.size} bytes) is not cached`);
  }
  return plan;
}

/** Write a planned archive from the cache to `out`; resolves to what was written. */
export async function writeFromCache(plan: ExportPlan, cache: ContentCache, out: Writable, onBytes?: (n: number) => void): Promise<ExportSummary> {
  await writeArchive(plan, async (d) => {
    const opened = await cache.open(d);
    return opened ? { body: toReadable(opened.source), size: opened.size } : undefined;
  }, out, onBytes);
  return summaryOf(plan);
}

export function summaryOf(plan: ExportPlan): ExportSummary {
  const index = JSON.parse(plan.index.toString('utf8')) as { manifests: unknown[] };
  return { images: index.manifests.length, blobs: plan.blobs.length, bytes: plan.blobs.reduce((n, b) => n + b.size, 0) };
}

async function taggedDigest(ref: ImageRef, where: ImageLocation, cache: ContentCache): Promise<Digest> {
  for (const name of where.repositories) {
    const entry = await cache.getTag(where.upstream, name, ref.tag ?? 'latest');
    if (entry) return entry.digest;
  }
  throw new ExportError(`${formatImageRef(ref)}: tag ${ref.tag ?? 'latest'} is not cached (pull it through Gantry first, or use --fetch)`);
}

/** The name written into the archive: the reference in full, by tag when it has one. */
function nameOf(ref: ImageRef): string {
  return ref.tag !== undefined ? formatImageRef({ registry: ref.registry, repository: ref.repository, tag: ref.tag }) : formatImageRef(ref);
}
