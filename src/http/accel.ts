import type { IncomingMessage, IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http';

/**
 * How the main process tells a serving process "this is a cache hit: serve the file yourself"
 * (the X-Accel-Redirect pattern). A serving process forwards a request it has no plan for; the
 * main process runs it through the real routes (authentication, upstream, access checks, cache
 * lookup) and, for a hit on a stored object, answers with the object's headers, no body, and two
 * private headers: which file holds it and how long the answer may be reused for requests that
 * look the same. Those headers only ever travel between Gantry's own processes.
 */
export const ACCEL_FILE = 'x-gantry-accel-file';
export const ACCEL_TTL_MS = 'x-gantry-accel-ttl-ms';
/** The object's size: the accel answer itself has no body (Content-Length 0). */
export const ACCEL_SIZE = 'x-gantry-accel-size';
/**
 * On an accel answer for a blob still downloading: the file it is being written to. The serving
 * process tails that file (bytes appear as they are written), holds the last byte back until the
 * download is verified and moved to ACCEL_FILE, and cuts the client if the file goes without
 * arriving there (the download failed). No bytes pass through the main process.
 */
export const ACCEL_FILLING = 'x-gantry-accel-filling';
/** Set by a serving process on what it forwards: the client's own address (for the admin guard). */
export const FORWARDED_CLIENT = 'x-gantry-client-address';

/** What a serving process learns from an accel answer: enough to answer the same request alone. */
export type AccelPlan = {
  file: string;
  size: number;
  digest: string;
  /** Response headers of a whole-object 200 (Content-Length and X-Request-Id left out). */
  headers: Record<string, string>;
  /** Date.now() after which the plan must be asked for again; Infinity for anonymous public content. */
  expiresAt: number;
  /** Set while the object is still downloading: the file being written (ACCEL_FILLING); such a plan is used once. */
  filling?: string;
};

/** Requests that reached the main process through a serving process, and the client each came from. */
const forwarded = new WeakMap<IncomingMessage, string>();

/** Called by the main process's internal listener only: a request forwarded by a serving process. */
export function markForwarded(req: IncomingMessage): void {
  const client = req.headers[FORWARDED_CLIENT];
  forwarded.set(req, typeof client === 'string' ? client : '');
  delete req.headers[FORWARDED_CLIENT];
}

/** Whether a request came through a serving process, which can serve a hit's file itself. */
export function isForwarded(req: IncomingMessage): boolean {
  return forwarded.has(req);
}

/** The address of the client that sent a request, through a serving process or not. */
export function clientAddress(req: IncomingMessage): string {
  return forwarded.get(req) ?? req.socket.remoteAddress ?? '';
}

/**
 * The headers of an accel answer: the object's own (its Content-Length replaced) and the private
 * ones. `ttlMs`: Infinity for as long as the object stays cached.
 */
export function accelHeaders(objectHeaders: Record<string, string>, file: string, size: number, ttlMs: number, filling?: string): Record<string, string> {
  const headers: Record<string, string> = {};
  for (const [name, value] of Object.entries(objectHeaders)) if (name.toLowerCase() !== 'content-length') headers[name] = value;
  headers['Content-Length'] = '0';
  headers[ACCEL_SIZE] = String(size);
  // The path is Gantry's own (cache dir + digest) but the cache dir may hold any character: encode it.
  headers[ACCEL_FILE] = encodeURIComponent(file);
  headers[ACCEL_TTL_MS] = Number.isFinite(ttlMs) ? String(Math.max(0, Math.floor(ttlMs))) : 'inf';
  if (filling !== undefined) headers[ACCEL_FILLING] = encodeURIComponent(filling);
  return headers;
}

/** Response headers a plan never replays: per-response, hop-by-hop, or private. */
const NOT_REPLAYED = new Set(['content-length', 'x-request-id', 'date', 'connection', 'keep-alive', 'transfer-encoding', ACCEL_FILE, ACCEL_TTL_MS, ACCEL_SIZE, ACCEL_FILLING]);

/** The plan an accel answer carries, or undefined when it is an ordinary answer (or a malformed one). */
export function readAccel(status: number, headers: IncomingHttpHeaders, now: number): AccelPlan | undefined {
  const file = headers[ACCEL_FILE];
  const ttl = headers[ACCEL_TTL_MS];
  const digest = headers['docker-content-digest'];
  const size = Number(headers[ACCEL_SIZE]);
  if (status !== 200 || typeof file !== 'string' || typeof ttl !== 'string' || typeof digest !== 'string' || !Number.isSafeInteger(size) || size < 0) return undefined;
  const ttlMs = ttl === 'inf' ? Infinity : Number(ttl);
  if (Number.isNaN(ttlMs)) return undefined;
  const kept: Record<string, string> = {};
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined || NOT_REPLAYED.has(name)) continue;
    kept[name] = Array.isArray(value) ? value.join(', ') : value;
  }
  const filling = headers[ACCEL_FILLING];
  const plan: AccelPlan = { file: decodeURIComponent(file), size, digest, headers: kept, expiresAt: now + ttlMs };
  if (typeof filling === 'string') plan.filling = decodeURIComponent(filling);
  return plan;
}

/** Methods whose request body a serving process relays to the main process; others' bodies are dropped. */
export function carriesBody(method: string | undefined): boolean {
  return method === 'POST' || method === 'PUT' || method === 'PATCH';
}

/** Headers of a request forwarded to the main process: as the client sent them, minus hop-by-hop ones, plus its address. */
export function forwardedHeaders(req: IncomingMessage): OutgoingHttpHeaders {
  const out: OutgoingHttpHeaders = {};
  for (const [name, value] of Object.entries(req.headers)) {
    if (value === undefined || name === 'connection' || name === 'keep-alive' || name === 'transfer-encoding' || name === 'upgrade' || name === FORWARDED_CLIENT) continue;
    // A body is relayed only for methods that carry one (see ServingProcess.forward).
    if (name === 'content-length' && !carriesBody(req.method)) continue;
    out[name] = value;
  }
  out[FORWARDED_CLIENT] = req.socket.remoteAddress ?? '';
  return out;
}
