import { parseDigest, type Digest } from '../oci/digest.ts';
import { RegistryError } from '../oci/errors.ts';
import { parseReference, parseRepositoryName, type Reference } from '../oci/reference.ts';

/**
 * `name` is the path's repository part. It has passed the grammar, except
 * that its first component may be a `host:port` (a path-prefix route to an
 * upstream such as registry.internal:5000); upstream resolution validates the rest.
 */
export type ApiRoute =
  | { route: 'base' }
  | { route: 'manifest'; name: string; reference: Reference }
  | { route: 'blob'; name: string; digest: Digest }
  | { route: 'upload' }
  | { route: 'tags'; name: string }
  | { route: 'referrers'; name: string; digest: Digest }
  | { route: 'catalog' };

const HOST_PORT_COMPONENT = /^[a-z0-9]([a-z0-9.-]*[a-z0-9])?:\d{1,5}\//;

function checkName(raw: string): string {
  const rest = raw.replace(HOST_PORT_COMPONENT, '');
  parseRepositoryName(rest === raw ? raw : rest);
  if (raw.length > 255 + 64) throw new RegistryError('NAME_INVALID', { detail: { name: raw.slice(0, 255) } });
  return raw;
}

// The name is greedy: the last `/manifests/` (etc.) in the path is the separator,
// which is how the spec's grammar resolves names containing those words.
const ROUTE = /^\/v2\/(.+)\/(manifests|blobs|tags|referrers)\/(.*)$/;

/**
 * Map a raw (still percent-encoded) URL path to an API route, validating
 * every part against the distribution-spec grammar. A percent-encoded byte can
 * never be valid in a name, tag or digest, so encoded traversal is rejected
 * along with the plain kind.
 */
export function parseApiPath(path: string): ApiRoute {
  if (path === '/v2/' || path === '/v2') return { route: 'base' };
  if (path === '/v2/_catalog') return { route: 'catalog' };
  const m = ROUTE.exec(path);
  if (!m) throw new RegistryError('UNSUPPORTED', { status: 404, message: 'no such API endpoint' });
  const [, rawName = '', kind, rest = ''] = m;
  if (kind === 'blobs' && (rest === 'uploads' || rest === 'uploads/' || rest.startsWith('uploads/'))) return { route: 'upload' };
  const name = checkName(rawName);
  switch (kind) {
    case 'manifests':
      return { route: 'manifest', name, reference: manifestReference(rest) };
    case 'blobs':
      return { route: 'blob', name, digest: parseDigest(rest) };
    case 'referrers':
      return { route: 'referrers', name, digest: parseDigest(rest) };
    default:
      if (rest !== 'list') throw new RegistryError('UNSUPPORTED', { status: 404, message: 'no such API endpoint' });
      return { route: 'tags', name };
  }
}

/**
 * A reference that is neither a tag nor a digest names no manifest: 404 MANIFEST_UNKNOWN, as
 * registries answer (a client probing for a tag must not be told its request was malformed).
 */
function manifestReference(raw: string): Reference {
  try {
    if (raw.length === 0 || raw.includes('/')) throw new RegistryError('MANIFEST_UNKNOWN');
    return parseReference(raw);
  } catch (err) {
    if (!(err instanceof RegistryError)) throw err;
    throw new RegistryError('MANIFEST_UNKNOWN', { status: 404, message: 'manifest unknown: the reference is neither a tag nor a digest', detail: { reference: raw.slice(0, 128) } });
  }
}
