/**
 * The OCI error vocabulary. Codes and messages are the wire strings the
 * reference implementation (distribution, registry/api/errcode) sends, so
 * clients that match on them behave the same against Gantry.
 */
export const OCI_ERRORS = {
  BLOB_UNKNOWN: { status: 404, message: 'blob unknown to registry' },
  MANIFEST_UNKNOWN: { status: 404, message: 'manifest unknown' },
  NAME_UNKNOWN: { status: 404, message: 'repository name not known to registry' },
  NAME_INVALID: { status: 400, message: 'invalid repository name' },
  TAG_INVALID: { status: 400, message: 'manifest tag did not match URI' },
  DIGEST_INVALID: { status: 400, message: 'provided digest did not match uploaded content' },
  RANGE_INVALID: { status: 416, message: 'invalid content range' },
  PAGINATION_NUMBER_INVALID: { status: 400, message: 'invalid number of results requested' },
  UNAUTHORIZED: { status: 401, message: 'authentication required' },
  DENIED: { status: 403, message: 'requested access to the resource is denied' },
  UNSUPPORTED: { status: 405, message: 'The operation is unsupported.' },
  TOOMANYREQUESTS: { status: 429, message: 'too many requests' },
  MANIFEST_INVALID: { status: 502, message: 'manifest invalid' },
  UNAVAILABLE: { status: 503, message: 'service unavailable' },
  UNKNOWN: { status: 500, message: 'unknown error' },
} as const satisfies Record<string, { status: number; message: string }>;

export type OciErrorCode = keyof typeof OCI_ERRORS;

export type RegistryErrorOptions = {
  detail?: unknown;
  status?: number;
  message?: string;
  headers?: Record<string, string>;
  cause?: unknown;
};

export class RegistryError extends Error {
  readonly code: OciErrorCode;
  readonly status: number;
  readonly detail: unknown;
  readonly headers: Readonly<Record<string, string>>;

  constructor(code: OciErrorCode, opts: RegistryErrorOptions = {}) {
    super(opts.message ?? OCI_ERRORS[code].message, { cause: opts.cause });
    this.name = 'RegistryError';
    this.code = code;
    this.status = opts.status ?? OCI_ERRORS[code].status;
    this.detail = opts.detail;
    this.headers = opts.headers ?? {};
  }
}

export type ErrorBody = { errors: Array<{ code: string; message: string; detail?: unknown }> };

export function toErrorBody(err: RegistryError): ErrorBody {
  const entry: { code: string; message: string; detail?: unknown } = { code: err.code, message: err.message };
  if (err.detail !== undefined) entry.detail = err.detail;
  return { errors: [entry] };
}

/** The first message of an OCI error body (`{"errors": [{"message": ...}]}`); undefined if the text is not one. */
export function ociErrorMessage(text: string): string | undefined {
  try {
    const parsed = JSON.parse(text) as { errors?: Array<{ message?: unknown }> } | null;
    const message = parsed?.errors?.[0]?.message;
    return typeof message === 'string' && message !== '' ? message : undefined;
  } catch {
    return undefined;
  }
}
