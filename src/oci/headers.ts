/** Header names used on the wire; constants so a typo is a compile error. */
export const DOCKER_CONTENT_DIGEST = 'Docker-Content-Digest';
export const DOCKER_API_VERSION = 'Docker-Distribution-API-Version';
export const DOCKER_API_VERSION_VALUE = 'registry/2.0';
export const WWW_AUTHENTICATE = 'WWW-Authenticate';
export const X_CACHE = 'X-Cache';
export const RETRY_AFTER = 'Retry-After';
export const CONTENT_RANGE = 'Content-Range';
export const ACCEPT_RANGES = 'Accept-Ranges';
export const REQUEST_ID = 'X-Request-Id';
export const LINK = 'Link';
export const WARNING = 'Warning';
/** The referrers API's answer to `?artifactType=`: the filter was applied (OCI distribution spec 1.1). */
export const OCI_FILTERS_APPLIED = 'OCI-Filters-Applied';
/**
 * RFC 7234 §5.5.1: a cache's mark on an answer it could not check with the origin. RFC 9111
 * retired the header, but it is what tools still show a person asking why a list may be old.
 */
export const WARNING_STALE = '110 - "Response is Stale"';

/** How a request was served, as reported in X-Cache and the metrics' `result` label. */
export type CacheResult = 'hit' | 'miss' | 'coalesced' | 'stale' | 'revalidated' | 'bypass';
