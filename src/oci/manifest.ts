import { parseDigest, type Digest } from './digest.ts';
import { RegistryError } from './errors.ts';
import { MT_DOCKER_MANIFEST, MT_DOCKER_MANIFEST_LIST, MT_OCI_INDEX, MT_OCI_MANIFEST, sniffManifestMediaType } from './media-types.ts';

export type Platform = { os: string; architecture: string; variant?: string };

/** An OCI content descriptor (image-spec descriptor.md), validated. */
export type Descriptor = {
  mediaType: string;
  digest: Digest;
  size: number;
  platform?: Platform;
  artifactType?: string;
  annotations?: Record<string, string>;
};

/** What Gantry needs of a manifest: the content it points at. */
export type ParsedManifest =
  | { kind: 'index'; mediaType: string; manifests: Descriptor[]; subject?: Descriptor; artifactType?: string }
  | { kind: 'image'; mediaType: string; config: Descriptor; layers: Descriptor[]; subject?: Descriptor; artifactType?: string };

const INDEX_TYPES = new Set([MT_OCI_INDEX, MT_DOCKER_MANIFEST_LIST]);
const IMAGE_TYPES = new Set([MT_OCI_MANIFEST, MT_DOCKER_MANIFEST]);

/**
 * Parse an image manifest or index. The media type comes from the manifest itself (its
 * `mediaType` field, else its shape), never from a descriptor that pointed at it: an index may
 * describe a Docker v2 manifest with an OCI type, and the bytes are what the digest covers.
 * Throws MANIFEST_INVALID for anything that is not a well-formed schema 2 manifest or index.
 */
export function parseManifest(bytes: Uint8Array): ParsedManifest {
  let json: unknown;
  try {
    json = JSON.parse(Buffer.from(bytes).toString('utf8'));
  } catch {
    throw invalid('not JSON');
  }
  if (!isRecord(json)) throw invalid('not a JSON object');
  if (json['schemaVersion'] !== 2) throw invalid(`schemaVersion ${JSON.stringify(json['schemaVersion'])} is not 2`);
  const mediaType = sniffManifestMediaType(bytes) ?? MT_OCI_MANIFEST;
  const subject = json['subject'] === undefined ? undefined : descriptor(json['subject'], 'subject');
  const artifactType = optionalString(json['artifactType'], 'artifactType');
  const extra = { ...(subject ? { subject } : {}), ...(artifactType !== undefined ? { artifactType } : {}) };
  if (INDEX_TYPES.has(mediaType) || (!IMAGE_TYPES.has(mediaType) && Array.isArray(json['manifests']))) {
    const list = json['manifests'];
    if (!Array.isArray(list)) throw invalid('an index without a manifests list');
    return { kind: 'index', mediaType, manifests: list.map((d, i) => descriptor(d, `manifests[${i}]`)), ...extra };
  }
  const layers = json['layers'];
  if (!Array.isArray(layers)) throw invalid('a manifest without a layers list');
  return { kind: 'image', mediaType, config: descriptor(json['config'], 'config'), layers: layers.map((d, i) => descriptor(d, `layers[${i}]`)), ...extra };
}

/** Every digest a manifest references directly (an index's children; an image's config and layers). */
export function referencedDigests(m: ParsedManifest): Digest[] {
  return m.kind === 'index' ? m.manifests.map((d) => d.digest) : [m.config.digest, ...m.layers.map((d) => d.digest)];
}

/**
 * `os/arch[/variant]`, as `--platform` and `docker pull --platform` spell it.
 * @example parsePlatform('linux/arm64/v8') // { os: 'linux', architecture: 'arm64', variant: 'v8' }
 */
export function parsePlatform(raw: string): Platform {
  const parts = raw.split('/');
  const ok = (p: string | undefined): p is string => p !== undefined && /^[a-z0-9._-]+$/i.test(p);
  const [os, architecture, variant] = parts;
  if (parts.length < 2 || parts.length > 3 || !ok(os) || !ok(architecture) || (parts.length === 3 && !ok(variant))) {
    throw new Error(`invalid platform ${JSON.stringify(raw)}: expected os/arch or os/arch/variant, e.g. linux/amd64`);
  }
  return variant === undefined ? { os, architecture } : { os, architecture, variant };
}

/** Whether an index entry's platform is the wanted one; a wanted platform without a variant takes any variant. */
export function platformMatches(have: Platform | undefined, want: Platform): boolean {
  if (!have) return false;
  return have.os === want.os && have.architecture === want.architecture && (want.variant === undefined || have.variant === want.variant);
}

export function formatPlatform(p: Platform): string {
  return p.variant === undefined ? `${p.os}/${p.architecture}` : `${p.os}/${p.architecture}/${p.variant}`;
}

function descriptor(raw: unknown, where: string): Descriptor {
  if (!isRecord(raw)) throw invalid(`${where} is not a descriptor`);
  const mediaType = raw['mediaType'];
  if (typeof mediaType !== 'string' || mediaType.length === 0) throw invalid(`${where}.mediaType is missing`);
  let digest: Digest;
  try {
    digest = parseDigest(String(raw['digest']));
  } catch {
    throw invalid(`${where}.digest ${JSON.stringify(raw['digest'])} is not a valid digest`);
  }
  const size = raw['size'];
  if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0) throw invalid(`${where}.size is not a non-negative integer`);
  const out: Descriptor = { mediaType, digest, size };
  if (raw['platform'] !== undefined) out.platform = platform(raw['platform'], `${where}.platform`);
  const artifactType = optionalString(raw['artifactType'], `${where}.artifactType`);
  if (artifactType !== undefined) out.artifactType = artifactType;
  if (isRecord(raw['annotations'])) {
    out.annotations = Object.fromEntries(Object.entries(raw['annotations']).filter((e): e is [string, string] => typeof e[1] === 'string'));
  }
  return out;
}

function platform(raw: unknown, where: string): Platform {
  if (!isRecord(raw) || typeof raw['os'] !== 'string' || typeof raw['architecture'] !== 'string') throw invalid(`${where} needs os and architecture`);
  const variant = optionalString(raw['variant'], `${where}.variant`);
  return variant === undefined ? { os: raw['os'], architecture: raw['architecture'] } : { os: raw['os'], architecture: raw['architecture'], variant };
}

function optionalString(v: unknown, where: string): string | undefined {
  if (v === undefined) return undefined;
  if (typeof v !== 'string') throw invalid(`${where} is not a string`);
  return v;
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function invalid(why: string): RegistryError {
  return new RegistryError('MANIFEST_INVALID', { message: `invalid manifest: ${why}` });
}
