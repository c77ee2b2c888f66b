import { digestAlgorithm, digestHex, digestOf, type Digest } from '../oci/digest.ts';
import { parseImageRef } from '../oci/image-ref.ts';
import { parseManifest, type Descriptor } from '../oci/manifest.ts';
import { MT_DOCKER_MANIFEST } from '../oci/media-types.ts';
import { parseRepositoryName, parseTag } from '../oci/reference.ts';
import { ImportError } from './archive-source.ts';
import type { Scan, ScannedFile } from './archive-scan.ts';

/**
 * The registry host an archive's name gives (`ghcr.io` for `ghcr.io/org/app:1.2`, `docker.io` for
 * Docker Hub names); absent for a bare tag or no name, which land under --repository.
 */
type Named = { registry?: string };
/** A blob to copy from the archive entry `entry`, verified against `digest` as it is written. */
export type PlannedBlob = Named & { entry: string; digest: Digest; size: number; repository: string };
/** A manifest or index, its bytes unchanged (or, for legacy docker-save, built by Gantry). */
export type PlannedManifest = Named & { digest: Digest; mediaType: string; bytes: Buffer; repository: string };
/** One image the archive names: where it lands and its top manifest. `tag` is absent for digest-only imports. */
export type PlannedImage = Named & { repository: string; tag?: string; digest: Digest; mediaType: string; size: number; authored: boolean };
/** Where one image lands: its repository, tag (absent: by digest only) and the registry its name gives. */
type Target = Named & { repository: string; tag?: string };
export type ImportPlan = { format: 'docker-save' | 'oci'; blobs: PlannedBlob[]; manifests: PlannedManifest[]; images: PlannedImage[] };
export type PlanOptions = { repository?: string };

const MT_DOCKER_CONFIG = 'application/vnd.docker.container.image.v1+json';
const MT_DOCKER_LAYER = 'application/vnd.docker.image.rootfs.diff.tar';
const MT_DOCKER_LAYER_GZIP = 'application/vnd.docker.image.rootfs.diff.tar.gzip';
const REF_NAME = 'org.opencontainers.image.ref.name';
/** Docker 25+ and containerd put the full reference here; ref.name then holds only the tag. */
const CONTAINERD_NAME = 'io.containerd.image.name';

/**
 * Decide what an archive holds from its first pass. OCI layout (index.json) wins over
 * docker-save's manifest.json, since Docker 25+ writes both and only the OCI side carries the
 * registry's manifests byte for byte. Throws ImportError naming the file and entry.
 */
export function planImport(file: string, scan: Scan, opts: PlanOptions): ImportPlan {
  if (scan.has('index.json')) return planOci(file, scan, opts);
  if (scan.has('manifest.json')) return planDockerSave(file, scan, opts);
  throw new ImportError(file, undefined, 'unknown format: neither an OCI layout (index.json) nor a docker save (manifest.json)');
}

function planOci(file: string, scan: Scan, opts: PlanOptions): ImportPlan {
  checkBlobNames(file, scan);
  const top = jsonOf(file, scan, 'index.json');
  const index = parseOr(file, 'index.json', top);
  if (index.kind !== 'index') throw new ImportError(file, 'index.json', 'is not an image index');
  const plan: ImportPlan = { format: 'oci', blobs: [], manifests: [], images: [] };
  for (const d of index.manifests) {
    const target = nameOf(file, d, opts);
    addManifest(file, scan, d.digest, target, plan, new Set());
    const m = plan.manifests.find((x) => x.digest === d.digest);
    if (!m) continue;
    plan.images.push({ ...target, digest: d.digest, mediaType: m.mediaType, size: m.bytes.length, authored: false });
  }
  return dedupe(plan);
}

/** A manifest and everything under it; its media type comes from its own bytes, never the descriptor. */
function addManifest(file: string, scan: Scan, digest: Digest, target: Target, plan: ImportPlan, seen: Set<string>): void {
  if (seen.has(digest)) return;
  seen.add(digest);
  const entry = blobEntry(digest);
  const bytes = jsonOf(file, scan, entry);
  const m = parseOr(file, entry, bytes);
  const where = whereOf(target);
  plan.manifests.push({ digest, mediaType: m.mediaType, bytes, ...where });
  if (m.kind === 'index') {
    for (const child of m.manifests) addManifest(file, scan, child.digest, target, plan, seen);
    return;
  }
  for (const d of [m.config, ...m.layers]) plan.blobs.push({ entry: requireFile(file, scan, blobEntry(d.digest)).name, digest: d.digest, size: d.size, ...where });
}

/** docker save's manifest.json: [{Config, RepoTags, Layers}], no registry manifest; Gantry writes one. */
function planDockerSave(file: string, scan: Scan, opts: PlanOptions): ImportPlan {
  const raw: unknown = JSON.parse(jsonOf(file, scan, 'manifest.json').toString('utf8'));
  if (!Array.isArray(raw)) throw new ImportError(file, 'manifest.json', 'is not a list of images');
  const plan: ImportPlan = { format: 'docker-save', blobs: [], manifests: [], images: [] };
  raw.forEach((item: unknown, i) => {
    const where = `manifest.json[${i}]`;
    if (typeof item !== 'object' || item === null) throw new ImportError(file, where, 'is not an object');
    const rec = item as Record<string, unknown>;
    const config = requireFile(file, scan, stringField(file, where, rec, 'Config'));
    const layersRaw = rec['Layers'];
    if (!Array.isArray(layersRaw)) throw new ImportError(file, where, 'Layers is not a list');
    const layers = layersRaw.map((l: unknown) => requireFile(file, scan, typeof l === 'string' ? l : ''));
    const bytes = Buffer.from(JSON.stringify(dockerManifest(config, layers), null, 3));
    const digest = digestOf(bytes);
    const tags = Array.isArray(rec['RepoTags']) ? rec['RepoTags'].filter((t): t is string => typeof t === 'string') : [];
    const targets = tags.length > 0 ? tags.map((t) => fullRef(file, where, t)) : [untagged(file, where, opts)];
    for (const t of targets) {
      const where = whereOf(t);
      for (const f of [config, ...layers]) plan.blobs.push({ entry: f.name, digest: f.digest, size: f.size, ...where });
      plan.manifests.push({ digest, mediaType: MT_DOCKER_MANIFEST, bytes, ...where });
      plan.images.push({ ...t, digest, mediaType: MT_DOCKER_MANIFEST, size: bytes.length, authored: true });
    }
  });
  return dedupe(plan);
}

/** The layer files as they are in the archive: their digests are of those bytes. */
function dockerManifest(config: ScannedFile, layers: ScannedFile[]): Record<string, unknown> {
  return {
    schemaVersion: 2,
    mediaType: MT_DOCKER_MANIFEST,
    config: { mediaType: MT_DOCKER_CONFIG, size: config.size, digest: config.digest },
    layers: layers.map((l) => ({ mediaType: l.gzip ? MT_DOCKER_LAYER_GZIP : MT_DOCKER_LAYER, size: l.size, digest: l.digest })),
  };
}

/** Where an index entry lands: a full reference, or a bare tag under --repository. */
function nameOf(file: string, d: Descriptor, opts: PlanOptions): Target {
  const where = `index.json ${d.digest}`;
  const full = d.annotations?.[CONTAINERD_NAME];
  if (full !== undefined) return fullRef(file, where, full);
  const name = d.annotations?.[REF_NAME];
  if (name === undefined) return untagged(file, where, opts);
  if (name.includes('/') || name.includes(':') || name.includes('@')) return fullRef(file, where, name);
  if (opts.repository === undefined) throw new ImportError(file, where, `names only the tag ${JSON.stringify(name)}: pass --repository NAME`);
  try {
    return { repository: repositoryOf(opts.repository), tag: parseTag(name) };
  } catch {
    throw new ImportError(file, where, `invalid tag ${JSON.stringify(name)}`);
  }
}

/** No name at all: imported by digest only under --repository (printed), else an error saying so. */
function untagged(file: string, where: string, opts: PlanOptions): { repository: string } {
  if (opts.repository === undefined) throw new ImportError(file, where, 'names no image: pass --repository NAME to import it by digest');
  return { repository: repositoryOf(opts.repository) };
}

function fullRef(file: string, where: string, raw: string): Target {
  try {
    const ref = parseImageRef(raw);
    return { registry: ref.registry, repository: ref.repository, ...(ref.tag !== undefined ? { tag: ref.tag } : {}) };
  } catch (err) {
    throw new ImportError(file, where, (err as Error).message);
  }
}

/** A target without its tag: what a blob or manifest records of where it came in. */
function whereOf(t: Target): Named & { repository: string } {
  return { repository: t.repository, ...(t.registry !== undefined ? { registry: t.registry } : {}) };
}

/** `--repository nginx` means Docker's `library/nginx`, as `docker pull nginx` does. */
export function repositoryOf(raw: string): string {
  return parseRepositoryName(parseImageRef(raw).repository);
}

/** Every `blobs/<alg>/<hex>` must hash to the digest its name gives: checked here, before any write. */
function checkBlobNames(file: string, scan: Scan): void {
  // By entry name, not f.name: a symlink under blobs/ must hash to its own name too.
  for (const [name, f] of scan) {
    const m = /^blobs\/([a-z0-9]+)\/([a-f0-9]+)$/.exec(name);
    if (!m) continue;
    if (`${m[1]}:${m[2]}` !== f.digest) throw new ImportError(file, name, `bytes do not match the digest its name gives (they hash to ${f.digest})`);
  }
}

function blobEntry(d: Digest): string {
  return `blobs/${digestAlgorithm(d)}/${digestHex(d)}`;
}

function requireFile(file: string, scan: Scan, entry: string): ScannedFile {
  const f = scan.get(entry);
  if (!f) throw new ImportError(file, entry, 'is referenced but not in the archive');
  return f;
}

function jsonOf(file: string, scan: Scan, entry: string): Buffer {
  const f = requireFile(file, scan, entry);
  if (!f.json) throw new ImportError(file, entry, 'is not a JSON document');
  return f.json;
}

function parseOr(file: string, entry: string, bytes: Buffer): ReturnType<typeof parseManifest> {
  try {
    return parseManifest(bytes);
  } catch (err) {
    throw new ImportError(file, entry, (err as Error).message);
  }
}

function stringField(file: string, where: string, rec: Record<string, unknown>, key: string): string {
  const v = rec[key];
  if (typeof v !== 'string') throw new ImportError(file, where, `${key} is not a string`);
  return v;
}

/** The same blob or manifest named twice (shared layers, several tags) is written once. */
function dedupe(plan: ImportPlan): ImportPlan {
  const blobs = new Map(plan.blobs.map((b) => [b.digest, b]));
  const manifests = new Map(plan.manifests.map((m) => [m.digest, m]));
  return { ...plan, blobs: [...blobs.values()], manifests: [...manifests.values()] };
}
