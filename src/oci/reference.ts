import { RegistryError } from './errors.ts';
import { parseDigest, type Digest } from './digest.ts';

/** A repository name that matches the distribution-spec grammar. */
export type RepositoryName = string & { readonly __brand: 'RepositoryName' };
export type Tag = string & { readonly __brand: 'Tag' };

// distribution-spec "Pulling manifests": <name> and <reference> grammars.
const NAME_COMPONENT = '[a-z0-9]+(?:(?:\\.|_|__|-+)[a-z0-9]+)*';
const NAME_GRAMMAR = new RegExp(`^${NAME_COMPONENT}(?:/${NAME_COMPONENT})*$`);
const TAG_GRAMMAR = /^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$/;
const MAX_NAME_LENGTH = 255;

/** @example parseRepositoryName('library/alpine') */
export function parseRepositoryName(raw: string): RepositoryName {
  if (raw.length === 0 || raw.length > MAX_NAME_LENGTH || !NAME_GRAMMAR.test(raw)) {
    throw new RegistryError('NAME_INVALID', { detail: { name: raw.slice(0, MAX_NAME_LENGTH) } });
  }
  return raw as RepositoryName;
}

export function parseTag(raw: string): Tag {
  if (!TAG_GRAMMAR.test(raw)) throw new RegistryError('TAG_INVALID', { message: 'invalid tag', detail: { tag: raw.slice(0, 128) } });
  return raw as Tag;
}

export type Reference = { kind: 'tag'; tag: Tag } | { kind: 'digest'; digest: Digest };

/** A manifest reference is a digest if it contains ':', a tag otherwise (tags cannot contain ':'). */
export function parseReference(raw: string): Reference {
  return raw.includes(':') ? { kind: 'digest', digest: parseDigest(raw) } : { kind: 'tag', tag: parseTag(raw) };
}
