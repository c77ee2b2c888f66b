/** What a serving process needs to know, sent by the main process once it has forked it. */
export type WorkerStart = {
  t: 'start';
  /** 1-based, for logs. */
  index: number;
  listen: { host: string; port: number };
  /** The main process's internal listener (an abstract Unix socket). */
  primarySocket: string;
  /** The cache directory, absolute: an accel answer may only name its stored files and its tmp/ (FsBlobStore's layout). */
  cacheRoot: string;
  logLevel: string;
  clientIdleTimeoutMs: number;
  /** HTTPS on the public port: each serving process reads and watches the files itself. */
  tls?: { certFile: string; keyFile: string } | undefined;
};

/** Main process -> serving process. */
export type ToWorker =
  | WorkerStart
  /** These objects left the cache: drop their plans and descriptors. */
  | { t: 'forget'; digests: string[] }
  /** Send your metrics (prom-client's JSON form), answering with the same id. */
  | { t: 'metrics'; id: number }
  /** Stop accepting connections, finish what is being sent, exit. */
  | { t: 'stop' };

/** Serving process -> main process. */
export type FromWorker =
  | { t: 'listening'; port: number }
  | { t: 'failed'; message: string; code: string | undefined }
  /** Objects served from plans since the last report, with how many times: the cache's recency and hit counts. */
  | { t: 'reads'; reads: Array<[string, number]> }
  | { t: 'metrics'; id: number; metrics: object[] };

export function isToWorker(m: unknown): m is ToWorker {
  return typeof m === 'object' && m !== null && typeof (m as { t?: unknown }).t === 'string';
}

export function isFromWorker(m: unknown): m is FromWorker {
  return typeof m === 'object' && m !== null && typeof (m as { t?: unknown }).t === 'string';
}
