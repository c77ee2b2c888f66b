export const MT_DOCKER_MANIFEST = 'application/vnd.docker.distribution.manifest.v2+json';
export const MT_DOCKER_MANIFEST_LIST = 'application/vnd.docker.distribution.manifest.list.v2+json';
export const MT_DOCKER_MANIFEST_V1_SIGNED = 'application/vnd.docker.distribution.manifest.v1+prettyjws';
export const MT_OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
export const MT_OCI_INDEX = 'application/vnd.oci.image.index.v1+json';

/** What Gantry asks an upstream for when the client expressed no preference. */
export const MANIFEST_ACCEPT = [MT_OCI_INDEX, MT_OCI_MANIFEST, MT_DOCKER_MANIFEST_LIST, MT_DOCKER_MANIFEST].join(', ');

/**
 * Parse a (possibly multi-line, already merged) Accept header into bare media
 * types. dockerd sends one Accept header line per type; callers merge them
 * before this.
 */
export function parseAccept(values: readonly string[]): string[] {
  const out: string[] = [];
  for (const value of values) {
    for (const part of value.split(',')) {
      const [type, ...params] = part.split(';').map((p) => p.trim().toLowerCase());
      // q=0 means "not acceptable" (RFC 9110 §12.4.2).
      if (params.some((p) => /^q\s*=\s*0(?:\.0*)?$/.test(p))) continue;
      if (type) out.push(type);
    }
  }
  return out;
}

/** True if a client whose Accept list is `accepted` may be served a manifest of `mediaType`. */
export function acceptsMediaType(accepted: readonly string[], mediaType: string): boolean {
  if (accepted.length === 0) return true;
  const mt = mediaType.toLowerCase();
  return accepted.some((a) => a === mt || a === '*/*' || (a.endsWith('/*') && mt.startsWith(a.slice(0, -1))));
}

/**
 * The media type of a manifest body, for when the upstream's Content-Type is
 * missing or generic: the `mediaType` field, else inferred from its shape.
 */
export function sniffManifestMediaType(body: Uint8Array): string | undefined {
  try {
    const json: unknown = JSON.parse(Buffer.from(body).toString('utf8'));
    if (typeof json !== 'object' || json === null) return undefined;
    const m = json as { mediaType?: unknown; manifests?: unknown; schemaVersion?: unknown; signatures?: unknown };
    if (typeof m.mediaType === 'string') return m.mediaType;
    if (m.schemaVersion === 1) return MT_DOCKER_MANIFEST_V1_SIGNED;
    if (Array.isArray(m.manifests)) return MT_OCI_INDEX;
    return MT_OCI_MANIFEST;
  } catch {
    return undefined;
  }
}
