import type { ClientCredential } from '../auth/credentials.ts';
import type { Digest } from '../oci/digest.ts';
import type { BlobResponse } from '../upstream/registry-api.ts';
import type { ResolvedTarget } from '../upstream/upstreams.ts';
import type { AccessProbe } from './access-guard.ts';

/**
 * A client's request for a blob, its upstream resolved. Its own module so that the pull-through
 * blobs (blobs.ts) and the sources of their fills (fill-sources.ts) share it without importing
 * each other.
 */
export type BlobRequest = ResolvedTarget & { digest: Digest; auth: ClientCredential };

/** GET the blob upstream (from `offset` with a Range request when resuming). */
export function fetchBlob(req: BlobRequest, signal: AbortSignal | undefined, offset = 0): Promise<BlobResponse> {
  return req.upstream.getBlob(req.remoteName, req.digest, { auth: req.auth, signal, offset });
}

export function probe(req: BlobRequest): AccessProbe {
  return { blob: req.digest };
}
