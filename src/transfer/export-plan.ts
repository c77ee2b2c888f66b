import { digestHex, digestOf, type Digest } from '../oci/digest.ts';
import { parseManifest, platformMatches, formatPlatform, type Descriptor, type Platform } from '../oci/manifest.ts';
import { MT_OCI_INDEX, MT_OCI_MANIFEST } from '../oci/media-types.ts';

/** Where an export reads manifests; undefined means "not cached". */
export type ManifestReader = (digest: Digest) => Promise<Buffer | undefined>;

/** One image to export: the name it is written under and its root manifest (image or index). */
export type ExportRoot = { name: string; digest: Digest; bytes: Buffer };

/** A blob of the archive: manifests carry their bytes, other blobs are streamed from the store. */
export type PlannedBlob = { digest: Digest; size: number; bytes?: Buffer };

/** One image manifest in the archive with its config and layers: what docker-save's manifest.json lists. */
type PlannedImage = { manifest: Digest; config: Digest; layers: Digest[]; platform?: Platform };

export type ExportPlan = {
  /** Every blob once, manifests first. */
  blobs: PlannedBlob[];
  /** The archive's `index.json`. */
  index: Buffer;
  /** Docker 20.10's `docker load` reads only this legacy file (Docker 25+ writes both). */
  manifestJson: Buffer;
};

/** The size of the archive an export from the running instance streams (archiveBytes), for the CLI's progress bar. */
export const EXPORT_BYTES_HEADER = 'X-Gantry-Export-Bytes';

export const ANNOTATION_REF_NAME = 'org.opencontainers.image.ref.name';
export const ANNOTATION_CONTAINERD_NAME = 'io.containerd.image.name';

/** An image the export cannot write, with what is missing: the message names both. */
export class ExportError extends Error {}

/**
 * Plan an archive of `roots`: an OCI image layout (oci-layout, index.json, blobs/<alg>/<hex>) plus
 * docker-save's manifest.json. Manifest bytes are never rewritten, except the index Gantry writes
 * when `platforms` narrows a multi-arch image. Each root's index.json entry is typed as an OCI
 * manifest or index even over Docker v2 bytes: skopeo 1.9 only picks OCI-typed entries for
 * `oci-archive:FILE:REF`, and the digest covers the bytes, not the descriptor.
 */
export async function planExport(roots: readonly ExportRoot[], platforms: readonly Platform[], read: ManifestReader): Promise<ExportPlan> {
  const blobs = new Map<Digest, PlannedBlob>();
  const entries: Descriptor[] = [];
  const legacy: Array<{ name: string; image: PlannedImage }> = [];
  for (const root of roots) {
    const planned = await planRoot(root, platforms, read, blobs);
    entries.push({
      mediaType: planned.kind === 'index' ? MT_OCI_INDEX : MT_OCI_MANIFEST,
      digest: planned.digest,
      size: planned.size,
      annotations: { [ANNOTATION_REF_NAME]: root.name, [ANNOTATION_CONTAINERD_NAME]: root.name },
    });
    const image = pickForDockerLoad(planned.images);
    if (image) legacy.push({ name: root.name, image });
  }
  const index = { schemaVersion: 2, mediaType: MT_OCI_INDEX, manifests: entries };
  return { blobs: sortManifestsFirst([...blobs.values()]), index: json(index), manifestJson: json(manifestJsonOf(legacy)) };
}

type PlannedRoot = { kind: 'index' | 'image'; digest: Digest; size: number; images: PlannedImage[] };

async function planRoot(root: ExportRoot, platforms: readonly Platform[], read: ManifestReader, blobs: Map<Digest, PlannedBlob>): Promise<PlannedRoot> {
  const parsed = parseManifest(root.bytes);
  if (parsed.kind === 'image') {
    blobs.set(root.digest, { digest: root.digest, size: root.bytes.length, bytes: root.bytes });
    return { kind: 'image', digest: root.digest, size: root.bytes.length, images: [await planImage(root, root.digest, root.bytes, undefined, blobs)] };
  }
  const wanted = platforms.length === 0 ? parsed.manifests : parsed.manifests.filter((d) => platforms.some((p) => platformMatches(d.platform, p)));
  if (wanted.length === 0) {
    throw new ExportError(`${root.name}: no manifest for ${platforms.map(formatPlatform).join(', ')} in its index (has ${parsed.manifests.map((d) => (d.platform ? formatPlatform(d.platform) : d.digest)).join(', ')})`);
  }
  const images: PlannedImage[] = [];
  for (const child of wanted) {
    const bytes = await read(child.digest);
    if (!bytes) throw new ExportError(`${root.name}: manifest ${child.digest}${child.platform ? ` (${formatPlatform(child.platform)})` : ''} is not cached`);
    blobs.set(child.digest, { digest: child.digest, size: bytes.length, bytes });
    const inner = parseManifest(bytes);
    // Nested indexes and artifacts are carried as they are; only images go into manifest.json.
    if (inner.kind === 'image') images.push(await planImage(root, child.digest, bytes, child.platform, blobs));
  }
  // The upstream's index bytes, unless narrowed: then Gantry writes one with only those entries.
  const indexBytes = wanted.length === parsed.manifests.length ? root.bytes : narrowedIndex(root.bytes, wanted);
  const digest = indexBytes === root.bytes ? root.digest : digestOf(indexBytes);
  blobs.set(digest, { digest, size: indexBytes.length, bytes: indexBytes });
  return { kind: 'index', digest, size: indexBytes.length, images };
}

async function planImage(root: ExportRoot, digest: Digest, bytes: Buffer, platform: Platform | undefined, blobs: Map<Digest, PlannedBlob>): Promise<PlannedImage> {
  const parsed = parseManifest(bytes);
  if (parsed.kind !== 'image') throw new ExportError(`${root.name}: ${digest} is not an image manifest`);
  for (const d of [parsed.config, ...parsed.layers]) {
    if (!blobs.has(d.digest)) blobs.set(d.digest, { digest: d.digest, size: d.size });
  }
  return { manifest: digest, config: parsed.config.digest, layers: parsed.layers.map((l) => l.digest), ...(platform ? { platform } : {}) };
}

/** The root's own JSON with `manifests` narrowed, so its other fields (annotations, mediaType) survive. */
function narrowedIndex(original: Buffer, wanted: readonly Descriptor[]): Buffer {
  const doc = JSON.parse(original.toString('utf8')) as Record<string, unknown>;
  const keep = new Set(wanted.map((d) => d.digest));
  const list = (doc['manifests'] as Array<Record<string, unknown>>).filter((m) => keep.has(m['digest'] as Digest));
  return json({ ...doc, manifests: list });
}

/**
 * docker load (20.10) takes one image per name: of an index, the entry for this machine's
 * architecture when there is one, else the first.
 */
function pickForDockerLoad(images: readonly PlannedImage[]): PlannedImage | undefined {
  const arch = nodeArchToOci(process.arch);
  return images.find((i) => i.platform?.os === 'linux' && i.platform.architecture === arch) ?? images[0];
}

function nodeArchToOci(arch: string): string {
  return ({ x64: 'amd64', ia32: '386', arm: 'arm' } as Record<string, string>)[arch] ?? arch;
}

function manifestJsonOf(legacy: ReadonlyArray<{ name: string; image: PlannedImage }>): unknown[] {
  const byManifest = new Map<Digest, { Config: string; RepoTags: string[]; Layers: string[] }>();
  for (const { name, image } of legacy) {
    const row = byManifest.get(image.manifest) ?? { Config: blobPath(image.config), RepoTags: [], Layers: image.layers.map(blobPath) };
    const tag = dockerRepoTag(name);
    if (tag !== undefined && !row.RepoTags.includes(tag)) row.RepoTags.push(tag);
    byManifest.set(image.manifest, row);
  }
  return [...byManifest.values()];
}

/**
 * docker's RepoTags want `repo:tag`; a digest-only name has none. Written in full (docker.io/...):
 * docker load normalises it to the short name it shows, while podman 4.3 (which loads a multi-image
 * archive through this file) would put a short `test/app` under `localhost/`.
 */
function dockerRepoTag(name: string): string | undefined {
  return name.includes('@') ? undefined : name;
}

export function blobPath(digest: Digest): string {
  return `blobs/${digest.slice(0, digest.indexOf(':'))}/${digestHex(digest)}`;
}

function sortManifestsFirst(blobs: PlannedBlob[]): PlannedBlob[] {
  return [...blobs.filter((b) => b.bytes), ...blobs.filter((b) => !b.bytes)];
}

function json(value: unknown): Buffer {
  return Buffer.from(JSON.stringify(value));
}
