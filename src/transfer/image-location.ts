import { DOCKER_HUB_HOST } from '../config/schema.ts';
import type { ImageRef } from '../oci/image-ref.ts';

/** Where an image reference's content sits in the cache: the upstream it is cached under and the repository names to look for. */
export type ImageLocation = { upstream: string; repositories: string[] };

/** What resolving needs of the config: the upstreams' host names and the default one. */
export type UpstreamNames = { upstreams: ReadonlyArray<{ host: string }>; defaultUpstream: string };

/**
 * The cache location of `ref`: a registry host that names a configured upstream is that
 * upstream; Docker Hub names (and names without a registry) belong to the default upstream.
 * Undefined when no configured upstream serves the ref's registry.
 */
export function locateImage(ref: ImageRef, config: UpstreamNames): ImageLocation | undefined {
  if (config.upstreams.some((u) => u.host === ref.registry)) return { upstream: ref.registry, repositories: [ref.repository] };
  if (ref.registry !== DOCKER_HUB_HOST) return undefined;
  const upstream = config.defaultUpstream;
  // A Docker Hub name served by another default upstream is cached under the name without `library/`.
  const repositories = upstream !== DOCKER_HUB_HOST && ref.repository.startsWith('library/')
    ? [ref.repository, ref.repository.slice('library/'.length)]
    : [ref.repository];
  return { upstream, repositories };
}
