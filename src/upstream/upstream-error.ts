import { classifyIoError, isTimeout } from '../io/io-error.ts';
import { RETRY_AFTER, WWW_AUTHENTICATE } from '../oci/headers.ts';
import { RegistryError, type OciErrorCode, type RegistryErrorOptions } from '../oci/errors.ts';

export type RouteKind = 'blob' | 'manifest' | 'tags' | 'referrers';

const NOT_FOUND_CODE: Record<RouteKind, OciErrorCode> = {
  blob: 'BLOB_UNKNOWN',
  manifest: 'MANIFEST_UNKNOWN',
  tags: 'NAME_UNKNOWN',
  referrers: 'MANIFEST_UNKNOWN',
};

const PASSTHROUGH_CODES = new Set<string>([
  'BLOB_UNKNOWN', 'MANIFEST_UNKNOWN', 'NAME_UNKNOWN', 'NAME_INVALID', 'DIGEST_INVALID', 'TAG_INVALID',
  'UNAUTHORIZED', 'DENIED', 'TOOMANYREQUESTS', 'UNSUPPORTED',
]);

/**
 * An upstream's non-success answer as the client sees it, still carrying the
 * upstream's own status: whether a stale cached tag may stand in depends on it.
 */
export class UpstreamStatusError extends RegistryError {
  readonly upstreamStatus: number;
  constructor(upstreamStatus: number, code: OciErrorCode, opts: RegistryErrorOptions) {
    super(code, opts);
    this.upstreamStatus = upstreamStatus;
  }
}

/**
 * Whether a failed upstream exchange lets a cached tag be served stale: the
 * upstream could not be asked at all, was down (5xx), rate limited us (429),
 * or said 404 on an upstream configured to keep serving what it had.
 */
export function allowsStale(err: unknown, serveCachedOn404: boolean | undefined): boolean {
  if (!(err instanceof UpstreamStatusError)) return true;
  const s = err.upstreamStatus;
  return s === 429 || s >= 500 || (s === 404 && serveCachedOn404 === true);
}

/**
 * The one table from an upstream's non-success answer to what the client
 * sees. Keeps the upstream's OCI code where it is meaningful; never lets an
 * upstream 404/429 become a 500, and never relays HTML.
 */
export function upstreamStatusToError(
  kind: RouteKind,
  status: number,
  body: string,
  headers: Record<string, string | string[] | undefined>,
): UpstreamStatusError {
  const err = (code: OciErrorCode, opts: RegistryErrorOptions): UpstreamStatusError => new UpstreamStatusError(status, code, opts);
  const upstreamCode = firstOciCode(body);
  const pass: Record<string, string> = {};
  const retryAfter = headers[RETRY_AFTER.toLowerCase()];
  if (typeof retryAfter === 'string') pass[RETRY_AFTER] = retryAfter;
  const challenge = headers[WWW_AUTHENTICATE.toLowerCase()];
  if (typeof challenge === 'string') pass[WWW_AUTHENTICATE] = challenge;

  if (status === 404) {
    const code = upstreamCode && PASSTHROUGH_CODES.has(upstreamCode.code) ? (upstreamCode.code as OciErrorCode) : NOT_FOUND_CODE[kind];
    return err(code, { status: 404, detail: upstreamCode?.detail });
  }
  if (status === 401) return err('UNAUTHORIZED', { detail: upstreamCode?.detail, headers: pass });
  if (status === 403) return err('DENIED', { detail: upstreamCode?.detail });
  if (status === 429) return err('TOOMANYREQUESTS', { headers: pass });
  if (status === 400 && upstreamCode && PASSTHROUGH_CODES.has(upstreamCode.code)) {
    return err(upstreamCode.code as OciErrorCode, { detail: upstreamCode.detail });
  }
  return err('UNAVAILABLE', {
    status: 502,
    message: `upstream answered ${status}`,
  });
}

/** Network-level failures → 502, or 504 when a deadline passed. */
export function upstreamNetworkError(err: unknown): RegistryError {
  const code = (err as { code?: unknown } | null)?.code;
  const timeout = isTimeout(classifyIoError(err));
  return new RegistryError('UNAVAILABLE', {
    status: timeout ? 504 : 502,
    message: timeout ? 'upstream timed out' : 'upstream unreachable',
    detail: typeof code === 'string' ? { cause: code } : undefined,
    cause: err,
  });
}

function firstOciCode(body: string): { code: string; detail?: unknown } | undefined {
  try {
    const parsed = JSON.parse(body) as { errors?: Array<{ code?: unknown; detail?: unknown }> };
    const first = parsed.errors?.[0];
    if (first && typeof first.code === 'string') return { code: first.code, detail: first.detail };
  } catch {
    // not JSON: fall back to the status alone
  }
  return undefined;
}
