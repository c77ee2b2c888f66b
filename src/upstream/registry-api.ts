import type { Dispatcher } from 'undici';
import type { Digest } from '../oci/digest.ts';
import { DOCKER_CONTENT_DIGEST } from '../oci/headers.ts';
import { readErrorText } from './read-body.ts';
import { upstreamStatusToError, type RouteKind } from './upstream-error.ts';

/**
 * The registry API's vocabulary as the upstream speaks it: where each object
 * lives under /v2/, and what its answers' headers mean. UpstreamClient's typed
 * calls are built from these; nothing outside upstream/ sees a path or a raw header.
 */

export type UpstreamHeaders = Record<string, string | string[] | undefined>;
export type UpstreamBody = Dispatcher.ResponseData['body'];
export type UpstreamResponse = { status: number; headers: UpstreamHeaders; body: UpstreamBody };

/** A blob's bytes: the whole blob, or from the requested offset on. */
export type BlobResponse = { size: number | undefined; body: UpstreamBody };
export type BlobHead = { size: number | undefined };
/** What a manifest answer says about itself; `digest` is the upstream's claim, not yet checked. */
export type ManifestHead = { digest: string | undefined; mediaType: string | undefined; size: number | undefined };
export type ManifestResponse = ManifestHead & { body: UpstreamBody };
/** Tags and referrers: small JSON answers, relayed with the headers a client may need. */
export type ListingResponse = { headers: Record<string, string>; body: UpstreamBody };

const DOCKER_CONTENT_DIGEST_LC = DOCKER_CONTENT_DIGEST.toLowerCase();
const LISTING_HEADERS = ['content-type', 'link', 'oci-filters-applied', DOCKER_CONTENT_DIGEST_LC];

export function blobPath(repo: string, digest: Digest): string {
  return `/v2/${repo}/blobs/${digest}`;
}

export function manifestPath(repo: string, reference: string): string {
  return `/v2/${repo}/manifests/${reference}`;
}

export function tagsPath(repo: string, q: { n?: string | undefined; last?: string | undefined }): string {
  return `/v2/${repo}/tags/list${query({ n: q.n, last: q.last })}`;
}

export function referrersPath(repo: string, digest: Digest, artifactType: string | undefined): string {
  return `/v2/${repo}/referrers/${digest}${query({ artifactType })}`;
}

function query(params: Record<string, string | undefined>): string {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined) q.set(k, v);
  return q.size > 0 ? `?${q.toString()}` : '';
}

export function headerString(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v[0] : v;
}

export function contentLength(headers: UpstreamHeaders): number | undefined {
  const len = Number(headerString(headers['content-length']));
  return Number.isSafeInteger(len) && len >= 0 ? len : undefined;
}

export function manifestHead(headers: UpstreamHeaders): ManifestHead {
  const size = Number(headerString(headers['content-length']));
  return {
    digest: headerString(headers[DOCKER_CONTENT_DIGEST_LC]),
    mediaType: headerString(headers['content-type'])?.split(';')[0]?.trim(),
    size: Number.isSafeInteger(size) ? size : undefined,
  };
}

export function listingHeaders(headers: UpstreamHeaders): Record<string, string> {
  const out: Record<string, string> = {};
  for (const h of LISTING_HEADERS) {
    const v = headerString(headers[h]);
    if (v !== undefined) out[h] = v;
  }
  return out;
}

/** A resumed blob must start exactly where the cut left it. */
export function isResumeOf(headers: UpstreamHeaders, offset: number): boolean {
  return headerString(headers['content-range'])?.startsWith(`bytes ${offset}-`) === true;
}

/**
 * Pass an answer with the expected status; anything else becomes the client's
 * error from the one table (a GET's error body is read for the upstream's OCI code).
 */
export async function expectStatus(kind: RouteKind, res: UpstreamResponse, expected: number, method: 'GET' | 'HEAD'): Promise<UpstreamResponse> {
  if (res.status === expected) return res;
  const text = method === 'GET' ? await readErrorText(res.body) : (await res.body.dump(), '');
  throw upstreamStatusToError(kind, res.status, text, res.headers);
}
