/**
 * What went wrong with an I/O operation, for deciding what to do about it
 * (resume, answer 502 or 504, stop caching, stay quiet). Matched on the error's
 * `code` (undici's UND_ERR_*, Node's errno and stream codes) and, for aborts,
 * its `name`, never on message text, which neither Node nor undici promise
 * to keep.
 *
 * - `timeout`: a deadline passed before an answer (connect, headers, our own AbortSignal.timeout);
 * - `stalled`: the peer stopped sending mid-body (undici's body timeout);
 * - `cut`: the connection broke or closed early mid-exchange;
 * - `refused` / `unreachable`: nobody listening / no route or name;
 * - `disk`: the local filesystem failed (full, I/O error, out of descriptors, permissions, missing path);
 * - `client_gone`: writing to a stream that was already destroyed;
 * - `aborted`: we cancelled it ourselves;
 * - `unknown`: anything else.
 */
export type IoErrorKind = 'timeout' | 'stalled' | 'cut' | 'refused' | 'unreachable' | 'disk' | 'client_gone' | 'aborted' | 'unknown';

const BY_CODE: Readonly<Record<string, IoErrorKind>> = {
  UND_ERR_CONNECT_TIMEOUT: 'timeout',
  UND_ERR_HEADERS_TIMEOUT: 'timeout',
  ETIMEDOUT: 'timeout',
  UND_ERR_BODY_TIMEOUT: 'stalled',
  UND_ERR_SOCKET: 'cut',
  UND_ERR_CLOSED: 'cut',
  UND_ERR_RES_CONTENT_LENGTH_MISMATCH: 'cut',
  ECONNRESET: 'cut',
  ECONNABORTED: 'cut',
  EPIPE: 'cut',
  ERR_STREAM_PREMATURE_CLOSE: 'cut',
  ECONNREFUSED: 'refused',
  ENOTFOUND: 'unreachable',
  EAI_AGAIN: 'unreachable',
  EHOSTUNREACH: 'unreachable',
  ENETUNREACH: 'unreachable',
  EHOSTDOWN: 'unreachable',
  ENETDOWN: 'unreachable',
  ENOSPC: 'disk',
  EDQUOT: 'disk',
  EIO: 'disk',
  EMFILE: 'disk',
  ENFILE: 'disk',
  EACCES: 'disk',
  EPERM: 'disk',
  EROFS: 'disk',
  ENOENT: 'disk',
  ENOTDIR: 'disk',
  EISDIR: 'disk',
  EEXIST: 'disk',
  EBADF: 'disk',
  EFBIG: 'disk',
  ERR_STREAM_DESTROYED: 'client_gone',
  ERR_STREAM_UNABLE_TO_PIPE: 'client_gone',
  ERR_STREAM_WRITE_AFTER_END: 'client_gone',
  UND_ERR_ABORTED: 'aborted',
};

type ErrorShape = { code?: unknown; name?: unknown; cause?: { code?: unknown } | null };

export function classifyIoError(err: unknown): IoErrorKind {
  if (err === null || typeof err !== 'object') return 'unknown';
  const e = err as ErrorShape;
  // Our own cancellations first: an abort carries no code worth trusting over its name.
  if (e.name === 'TimeoutError') return 'timeout';
  if (e.name === 'AbortError') return 'aborted';
  return kindOf(e.code) ?? kindOf(e.cause?.code) ?? 'unknown';
}

function kindOf(code: unknown): IoErrorKind | undefined {
  return typeof code === 'string' ? BY_CODE[code] : undefined;
}

/** A deadline passed, before the answer or mid-body. */
export function isTimeout(kind: IoErrorKind): boolean {
  return kind === 'timeout' || kind === 'stalled';
}

/** The peer broke off mid-body (not us): worth asking again for the rest. */
export function isResumable(kind: IoErrorKind): boolean {
  return kind === 'cut' || kind === 'stalled';
}
