import { parseDigest, type Digest } from './digest.ts';
import { parseRepositoryName, parseTag, type RepositoryName, type Tag } from './reference.ts';

/** An image reference as users write it (`nginx`, `ghcr.io/org/app:1.2`, `host:5000/x@sha256:…`), normalised. */
export type ImageRef = {
  /** Registry host (with port), `docker.io` when the reference names none. */
  registry: string;
  /** Repository as the registry knows it (`library/nginx` for Docker Hub's official images). */
  repository: RepositoryName;
  /** The tag; `latest` when neither tag nor digest is given. Absent for a digest-only reference. */
  tag?: Tag;
  digest?: Digest;
};

const DOCKER_HUB = 'docker.io';

/**
 * Parse an image reference with Docker's normalisation: the first path component is a registry
 * when it holds a `.` or `:` or is `localhost`; Docker Hub's single-component names get
 * `library/`; no tag and no digest means `latest`. Throws an Error naming the reference.
 * @example parseImageRef('nginx:1.27') // { registry: 'docker.io', repository: 'library/nginx', tag: '1.27' }
 */
export function parseImageRef(raw: string): ImageRef {
  const fail = (why: string): never => {
    throw new Error(`invalid image reference ${JSON.stringify(raw.slice(0, 300))}: ${why}`);
  };
  if (raw.length === 0 || raw.length > 512 || /\s/.test(raw)) fail('expected [registry/]repository[:tag][@digest]');
  let rest = raw;
  let digest: Digest | undefined;
  const at = rest.indexOf('@');
  if (at !== -1) {
    try {
      digest = parseDigest(rest.slice(at + 1));
    } catch {
      fail('the part after @ is not a valid digest');
    }
    rest = rest.slice(0, at);
  }
  let tag: Tag | undefined;
  const lastSlash = rest.lastIndexOf('/');
  const colon = rest.lastIndexOf(':');
  if (colon > lastSlash) {
    try {
      tag = parseTag(rest.slice(colon + 1));
    } catch {
      fail('invalid tag');
    }
    rest = rest.slice(0, colon);
  }
  const slash = rest.indexOf('/');
  const first = slash === -1 ? '' : rest.slice(0, slash);
  const hasRegistry = first !== '' && (first.includes('.') || first.includes(':') || first === 'localhost');
  const registry = hasRegistry ? first.toLowerCase() : DOCKER_HUB;
  let path = hasRegistry ? rest.slice(slash + 1) : rest;
  if (registry === DOCKER_HUB && !path.includes('/')) path = `library/${path}`;
  let repository: RepositoryName;
  try {
    repository = parseRepositoryName(path);
  } catch {
    return fail('invalid repository name (lowercase letters, digits, separators)');
  }
  const out: ImageRef = { registry, repository };
  if (tag !== undefined) out.tag = tag;
  else if (digest === undefined) out.tag = 'latest' as Tag;
  if (digest !== undefined) out.digest = digest;
  return out;
}

/** The reference in full (`docker.io/library/nginx:1.27@sha256:…`). */
export function formatImageRef(ref: ImageRef): string {
  return `${ref.registry}/${ref.repository}${ref.tag !== undefined ? `:${ref.tag}` : ''}${ref.digest !== undefined ? `@${ref.digest}` : ''}`;
}
