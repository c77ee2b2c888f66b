import { createHash, type Hash } from 'node:crypto';
import { RegistryError } from './errors.ts';

/** A digest string that has been parsed and validated: `<algorithm>:<lowercase hex>`. */
export type Digest = string & { readonly __brand: 'Digest' };

/** Algorithms Gantry can verify, with their hex length (OCI image-spec, descriptor.md). */
const ALGORITHMS = { sha256: 64, sha512: 128 } as const;
export type DigestAlgorithm = keyof typeof ALGORITHMS;

// distribution-spec grammar: algorithm-component ([+._-] algorithm-component)* ":" encoded
const DIGEST_GRAMMAR = /^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/;

/**
 * Parse a digest; throws RegistryError('DIGEST_INVALID') for anything that is
 * not a supported algorithm with the right-length lowercase hex.
 * @example parseDigest('sha256:' + 'a'.repeat(64))
 */
export function parseDigest(raw: string): Digest {
  if (raw.length > 256 || !DIGEST_GRAMMAR.test(raw)) {
    throw new RegistryError('DIGEST_INVALID', { message: 'invalid digest', detail: clip(raw) });
  }
  const [alg, hex] = raw.split(':') as [string, string];
  const len = (ALGORITHMS as Record<string, number>)[alg];
  if (len === undefined) {
    throw new RegistryError('DIGEST_INVALID', { message: 'unsupported digest algorithm', detail: clip(raw) });
  }
  if (hex.length !== len || !/^[0-9a-f]+$/.test(hex)) {
    throw new RegistryError('DIGEST_INVALID', { message: 'invalid digest', detail: clip(raw) });
  }
  return raw as Digest;
}

export function isDigestLike(raw: string): boolean {
  return raw.includes(':');
}

export function digestAlgorithm(d: Digest): DigestAlgorithm {
  return d.slice(0, d.indexOf(':')) as DigestAlgorithm;
}

export function digestHex(d: Digest): string {
  return d.slice(d.indexOf(':') + 1);
}

/** Streaming hasher for a digest's algorithm; `digest()` yields the `alg:hex` form. */
export type Digester = { update(chunk: Uint8Array): void; digest(): Digest };

export function createDigester(alg: DigestAlgorithm = 'sha256'): Digester {
  const hash: Hash = createHash(alg);
  return {
    update: (chunk) => void hash.update(chunk),
    digest: () => `${alg}:${hash.digest('hex')}` as Digest,
  };
}

export function digestOf(bytes: Uint8Array, alg: DigestAlgorithm = 'sha256'): Digest {
  return `${alg}:${createHash(alg).update(bytes).digest('hex')}` as Digest;
}

function clip(s: string): string {
  return s.length > 100 ? `${s.slice(0, 100)}…` : s;
}
