import { randomUUID } from 'node:crypto';
import { Agent, request, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Server as HttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { basename, dirname } from 'node:path';
import { blobPath, tempDir } from '../store/blob-store.ts';
import { pipeline } from 'node:stream';
import { RegistryError } from '../oci/errors.ts';
import { REQUEST_ID } from '../oci/headers.ts';
import { accessLogger, loggedPath, type Logger } from '../observability/logger.ts';
import type { Metrics } from '../observability/metrics.ts';
import { ACCEL_FILE, ACCEL_FILLING, ACCEL_SIZE, ACCEL_TTL_MS, carriesBody, forwardedHeaders, readAccel, type AccelPlan } from '../http/accel.ts';
import { createPublicServer, loadTls } from '../http/tls.ts';
import { FileResponder, sendError, type Sent } from './file-responder.ts';
import type { FromWorker, ToWorker, WorkerStart } from './messages.ts';
import { Plans, digestOfUrl, planKey } from './plans.ts';

const MAX_REQUEST_HEADER_BYTES = 16 * 1024;
const REQUEST_ID_PATTERN = /^[A-Za-z0-9._-]{1,64}$/;
/** How often reads served from plans are reported to the main process (cache recency). */
const READS_REPORT_MS = 1000;
/** After `stop`, connections still sending get this long before they are cut. */
const STOP_GRACE_MS = 5000;
/** Response headers from the main process that are this hop's business only. */
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'transfer-encoding', ACCEL_FILE, ACCEL_TTL_MS, ACCEL_SIZE, ACCEL_FILLING]);

export type ServingDeps = {
  log: Logger;
  metrics: Metrics;
  send: (m: FromWorker) => void;
  now?: () => number;
};

/**
 * A serving process: one of several that share Gantry's port (SO_REUSEPORT), so cache hits are
 * sent by as many cores as there are processes. It answers alone only what a plan covers (a
 * cached object by digest, as the main process said); everything else, including the first
 * request for each plan, goes to the main process over its internal socket, which owns the index,
 * the upstreams and every decision. It never writes to the cache.
 */
export class ServingProcess {
  private readonly start: WorkerStart;
  private readonly deps: ServingDeps;
  private readonly plans = new Plans();
  private readonly files = new FileResponder();
  private readonly agent = new Agent({ keepAlive: true, maxSockets: Infinity });
  private readonly access: Logger;
  private readonly now: () => number;
  private reads = new Map<string, number>();
  private readsTimer: NodeJS.Timeout | undefined;
  private server: Server | HttpsServer | undefined;
  private stopWatching: () => void = () => undefined;

  constructor(start: WorkerStart, deps: ServingDeps) {
    this.start = start;
    this.deps = deps;
    this.access = accessLogger(deps.log);
    this.now = deps.now ?? Date.now;
  }

  /** Listen on Gantry's port next to the other serving processes; resolves with the port bound. */
  async listen(): Promise<number> {
    const files = this.start.tls;
    const tls = files ? { files, material: await loadTls(files), log: this.deps.log } : undefined;
    const { server, stop } = createPublicServer({ maxHeaderSize: MAX_REQUEST_HEADER_BYTES, requestTimeout: 60_000, headersTimeout: 30_000 }, (req, res) => this.handle(req, res), tls);
    this.stopWatching = stop;
    server.setTimeout(this.start.clientIdleTimeoutMs);
    this.server = server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ host: this.start.listen.host, port: this.start.listen.port, reusePort: true }, () => {
        server.off('error', reject);
        resolve();
      });
    });
    this.readsTimer = setInterval(() => this.reportReads(), READS_REPORT_MS);
    this.readsTimer.unref();
    return (server.address() as AddressInfo).port;
  }

  onMessage(m: ToWorker): void {
    switch (m.t) {
      case 'forget':
        for (const digest of m.digests) this.forget(digest);
        break;
      case 'metrics':
        void this.deps.metrics.registry.getMetricsAsJSON().then((metrics) => this.deps.send({ t: 'metrics', id: m.id, metrics }));
        break;
      case 'stop':
      case 'start':
        break;
    }
  }

  /** Stop accepting, let bodies being sent finish (up to a grace period), report the last reads. */
  async stop(): Promise<void> {
    const server = this.server;
    clearInterval(this.readsTimer);
    this.stopWatching();
    if (server) {
      const force = setTimeout(() => server.closeAllConnections(), STOP_GRACE_MS);
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeIdleConnections();
      });
      clearTimeout(force);
    }
    this.agent.destroy();
    this.reportReads();
  }

  private forget(digest: string): void {
    this.plans.forget(digest);
    this.files.forget(blobPath(this.start.cacheRoot, digest));
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const key = planKey(req);
    const plan = key === undefined ? undefined : this.plans.get(key, this.now());
    if (key !== undefined && plan) this.fromPlan(req, res, key, plan);
    else this.forward(req, res, key);
  }

  /** `asked`: the plan came from the main process for this very request, so a missing file is not asked about again. */
  private fromPlan(req: IncomingMessage, res: ServerResponse, key: string, plan: AccelPlan, asked = false): void {
    const started = performance.now();
    const incoming = req.headers[REQUEST_ID.toLowerCase()];
    const reqId = typeof incoming === 'string' && REQUEST_ID_PATTERN.test(incoming) ? incoming : randomUUID();
    const headers = { ...plan.headers, [REQUEST_ID]: reqId };
    const done = (s: Sent): void => this.served(req, res, plan, reqId, started, s);
    this.files.send(req, res, plan, headers, done).then(
      (outcome) => {
        if (outcome !== 'gone') return;
        this.plans.forget(plan.digest);
        // Evicted or removed since: ask again (the main process fetches it or says what happened).
        if (!asked) {
          this.forward(req, res, key);
          return;
        }
        // The main process has just named this file and it cannot be read: say so, never loop.
        this.deps.log.error({ reqId, file: plan.file }, 'a cached file the main process named cannot be read (or has the wrong size)');
        sendError(res, new RegistryError('UNAVAILABLE', { status: 503, message: 'the cached copy cannot be read; try again' }));
      },
      (err: unknown) => {
        this.deps.log.error({ err: (err as Error).message, reqId }, 'serving a cached file failed');
        if (!res.headersSent) sendError(res, new RegistryError('UNKNOWN'));
        else res.destroy();
      },
    );
  }

  /** Metrics, the access log and the cache's read counts for an answer sent from a plan. */
  private served(req: IncomingMessage, res: ServerResponse, plan: AccelPlan, reqId: string, started: number, s: Sent): void {
    const durationMs = Math.round((performance.now() - started) * 10) / 10;
    const kind = req.url?.includes('/blobs/') ? 'blob' : 'manifest';
    // hit, or miss / coalesced for a download being tailed (the X-Cache the main process gave).
    const result = plan.headers['x-cache']?.toLowerCase() ?? 'hit';
    const { metrics } = this.deps;
    metrics.requests.inc({ kind, method: req.method, result, status: String(s.status) });
    metrics.requestDuration.observe({ kind, result }, durationMs / 1000);
    if (s.bytes > 0) metrics.servedBytes.inc({ kind, source: result === 'hit' ? 'cache' : 'upstream' }, s.bytes);
    if (result === 'hit') this.reads.set(plan.digest, (this.reads.get(plan.digest) ?? 0) + 1);
    if (!this.deps.log.isLevelEnabled('info')) return;
    const path = digestPath(req.url ?? '');
    this.access.info({ reqId, method: req.method, path, status: s.status, bytes: s.bytes, cache: result, durationMs, aborted: !res.writableFinished || undefined }, 'request');
  }

  /** Relay a request to the main process; learn a plan from an accel answer and serve it. */
  private forward(req: IncomingMessage, res: ServerResponse, key: string | undefined): void {
    const upstream = request({ socketPath: this.start.primarySocket, method: req.method, path: req.url, headers: forwardedHeaders(req), agent: this.agent });
    upstream.on('response', (answer) => {
      const plan = key === undefined ? undefined : this.acceptPlan(req, answer);
      if (key !== undefined && plan) {
        answer.resume();
        // A download in progress is tailed for this request only; a stored object's plan is kept.
        if (plan.filling === undefined) this.plans.set(key, plan);
        this.fromPlan(req, res, key, plan, true);
        return;
      }
      res.writeHead(answer.statusCode ?? 502, relayedHeaders(answer.rawHeaders));
      pipeline(answer, res, () => undefined);
    });
    upstream.on('error', (err) => {
      if (res.headersSent) {
        res.destroy();
        return;
      }
      this.deps.log.error({ err: err.message }, 'main process unreachable');
      sendError(res, new RegistryError('UNAVAILABLE', { status: 503, message: 'Gantry is restarting; try again' }));
    });
    // The client left: stop what it asked for (the main process's fills carry on without it).
    res.once('close', () => {
      if (!res.writableFinished) upstream.destroy();
    });
    if (carriesBody(req.method)) {
      pipeline(req, upstream, () => undefined);
      return;
    }
    // Nothing else Gantry serves reads a body: drop one here rather than relay it (the main
    // process would answer before reading it, and the relay could be cut under the answer).
    req.resume();
    upstream.end();
  }

  /** The plan in an answer, if it is one and it names the object asked for, under the cache directory. */
  private acceptPlan(req: IncomingMessage, answer: IncomingMessage): AccelPlan | undefined {
    const plan = readAccel(answer.statusCode ?? 0, answer.headers, this.now());
    if (!plan) return undefined;
    const digest = digestOfUrl(req.url ?? '');
    const badFilling = plan.filling !== undefined && (dirname(plan.filling) !== tempDir(this.start.cacheRoot) || basename(plan.filling).startsWith('.'));
    if (digest === undefined || plan.digest !== digest || plan.file !== blobPath(this.start.cacheRoot, digest) || badFilling) {
      this.deps.log.error({ digest, planned: plan.digest }, 'ignoring an accel answer for another object');
      return undefined;
    }
    return plan;
  }

  private reportReads(): void {
    if (this.reads.size === 0) return;
    const reads = [...this.reads];
    this.reads = new Map();
    this.deps.send({ t: 'reads', reads });
  }
}

/** rawHeaders (name, value, name, value...) without the hop-by-hop and private ones. */
function relayedHeaders(raw: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i] ?? '';
    if (!HOP_BY_HOP.has(name.toLowerCase())) out.push(name, raw[i + 1] ?? '');
  }
  return out;
}

/** The path as the main process logs it: without the query. */
function digestPath(url: string): string {
  const q = url.indexOf('?');
  return loggedPath(q === -1 ? url : url.slice(0, q));
}
