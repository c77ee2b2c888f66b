import { fork, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createNetServer } from 'node:net';
import { availableParallelism } from 'node:os';
import { extname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { AggregatorRegistry } from 'prom-client';
import { markForwarded } from '../http/accel.ts';
import type { Logger } from '../observability/logger.ts';
import type { Metrics } from '../observability/metrics.ts';
import type { Digest } from '../oci/digest.ts';
import type { ContentCache } from '../store/content-cache.ts';
import { tlsFilesOf } from '../http/tls.ts';
import { isFromWorker, type FromWorker, type ToWorker, type WorkerStart } from './messages.ts';

/** How long a serving process may take to start listening. */
const START_TIMEOUT_MS = 20_000;
/** How long stopping waits for serving processes to finish sending before they are killed. */
const STOP_TIMEOUT_MS = 8_000;
const METRICS_TIMEOUT_MS = 2_000;
/** A serving process that dies is started again after this long, doubling while it keeps dying. */
const RESTART_DELAY_MS = { first: 500, max: 30_000 };
/** After the main process's own listener is gone, a restarted Gantry may find the old port held this long by serving processes still exiting. */
const PORT_FREE_WAIT_MS = 3_000;

export type ServingOptions = {
  workers: number | 'auto';
  listen: { host: string; port: number };
  cacheDir: string;
  logLevel: string;
  clientIdleTimeoutMs: number;
  /** `tls.certFile` / `tls.keyFile`, checked by the main process already. */
  tls: { certFile?: string | undefined; keyFile?: string | undefined };
  serverOptions: { maxHeaderSize: number; requestTimeout: number; headersTimeout: number };
  cache: ContentCache;
  metrics: Metrics;
  log: Logger;
  /** Told of every object the serving processes read (the shared tier's recency); optional. */
  onRead?: ((digest: Digest) => void) | undefined;
};

/** `auto` never starts more than this: past a few, processes add memory, not throughput. */
const AUTO_MAX = 8;

/**
 * How many serving processes `workers` means on this machine. The cores are the ones this
 * process may run on (affinity), not a container's CPU quota: set `workers` from the quota there
 * (deploy/kubernetes/statefulset.yaml does).
 */
export function servingProcessCount(workers: number | 'auto', cores = availableParallelism()): number {
  if (workers !== 'auto') return workers;
  return cores >= 2 ? Math.min(cores, AUTO_MAX) : 0;
}

type Slot = { index: number; child: ChildProcess | undefined; restarts: number; startedAt: number; timer: NodeJS.Timeout | undefined };

/** A serving process that ran this long before dying starts again without delay growth. */
const HEALTHY_RUN_MS = 60_000;

/**
 * The main process's side of serving processes (src/serving/serving-process.ts): it listens on a
 * private socket for what they forward, starts them on the public port, starts them again if
 * they die, tells them which objects left the cache, records the reads they served in the
 * cache's recency, and merges their metrics into its own for /metrics.
 */
export class ServingProcesses {
  private readonly opts: ServingOptions;
  private readonly socketPath = `\0gantry-${process.pid}-${randomBytes(6).toString('hex')}`;
  private readonly slots: Slot[] = [];
  private internal: Server | undefined;
  private port = 0;
  private stopping = false;
  private forgotten: string[] = [];
  private metricsCalls = 0;
  private readonly metricsWaiters = new Map<number, (metrics: object[]) => void>();

  constructor(opts: ServingOptions) {
    this.opts = opts;
  }

  /**
   * Serve `listener` on the private socket, then start `count` serving processes on the public
   * port; resolves with the port they share. Rejects (everything stopped) if the port is taken.
   */
  async start(count: number, listener: (req: IncomingMessage, res: ServerResponse) => void): Promise<number> {
    const { listen } = this.opts;
    if (listen.port !== 0) await portIsFree(listen.host, listen.port);
    this.internal = createHttpServer(this.opts.serverOptions, (req, res) => {
      markForwarded(req);
      listener(req, res);
    });
    this.internal.setTimeout(this.opts.clientIdleTimeoutMs);
    await new Promise<void>((ok, fail) => {
      this.internal?.once('error', fail).listen(this.socketPath, () => ok());
    });
    this.opts.cache.onForget((digest: Digest) => this.queueForget(digest));
    try {
      for (let i = 1; i <= count; i += 1) this.slots.push({ index: i, child: undefined, restarts: 0, startedAt: 0, timer: undefined });
      const [first, ...rest] = this.slots;
      this.port = listen.port;
      // On port 0 the first one binds a real port and the others join it; else they start together.
      if (first && listen.port === 0) this.port = await this.launch(first);
      await Promise.all((listen.port === 0 ? rest : this.slots).map((s) => this.launch(s)));
    } catch (err) {
      await this.stop();
      throw err;
    }
    return this.port;
  }

  /** Prometheus text: this process's metrics and every serving process's, merged (counters summed). */
  async metricsText(): Promise<{ text: string; contentType: string }> {
    const own = await this.opts.metrics.registry.getMetricsAsJSON();
    const theirs = await Promise.all(this.slots.map((s) => this.metricsOf(s)));
    const merged = AggregatorRegistry.aggregate([own, ...theirs.filter((m): m is object[] => m !== undefined)]);
    return { text: await merged.metrics(), contentType: merged.contentType };
  }

  /** Tell every serving process to stop, wait for them (killing stragglers), close the private socket. */
  async stop(): Promise<void> {
    this.stopping = true;
    await Promise.all(this.slots.map((s) => this.stopOne(s)));
    const internal = this.internal;
    if (internal) {
      await new Promise<void>((ok) => {
        internal.close(() => ok());
        internal.closeAllConnections();
      });
    }
  }

  private launch(slot: Slot): Promise<number> {
    const entry = fileURLToPath(new URL(`./worker-main${extname(fileURLToPath(import.meta.url))}`, import.meta.url));
    const child = fork(entry, [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], serialization: 'advanced' });
    slot.child = child;
    slot.startedAt = Date.now();
    const start: WorkerStart = {
      t: 'start',
      index: slot.index,
      listen: { host: this.opts.listen.host, port: this.port },
      primarySocket: this.socketPath,
      cacheRoot: resolve(this.opts.cacheDir),
      logLevel: this.opts.logLevel,
      clientIdleTimeoutMs: this.opts.clientIdleTimeoutMs,
      tls: tlsFilesOf(this.opts.tls),
    };
    return new Promise<number>((ok, fail) => {
      const timer = setTimeout(() => fail(new Error(`serving process ${slot.index} did not start listening within ${START_TIMEOUT_MS / 1000} s`)), START_TIMEOUT_MS);
      const first = (m: unknown): void => {
        if (!isFromWorker(m)) return;
        if (m.t === 'listening') {
          clearTimeout(timer);
          child.off('message', first);
          ok(m.port);
        } else if (m.t === 'failed') {
          clearTimeout(timer);
          child.off('message', first);
          fail(Object.assign(new Error(m.message), { code: m.code }));
        }
      };
      child.on('message', first);
      child.on('message', (m: unknown) => {
        if (isFromWorker(m)) this.onMessage(m);
      });
      child.once('exit', (code, signal) => {
        clearTimeout(timer);
        fail(new Error(`serving process ${slot.index} exited (${signal ?? code}) before listening`));
        this.exited(slot, child, code, signal);
      });
      child.send({ ...start } satisfies ToWorker);
    });
  }

  private onMessage(m: FromWorker): void {
    if (m.t === 'reads') {
      for (const [digest, count] of m.reads) {
        this.opts.cache.recordReads(digest as Digest, count);
        this.opts.onRead?.(digest as Digest);
      }
    }
    else if (m.t === 'metrics') {
      this.metricsWaiters.get(m.id)?.(m.metrics);
      this.metricsWaiters.delete(m.id);
    }
  }

  private exited(slot: Slot, child: ChildProcess, code: number | null, signal: NodeJS.Signals | null): void {
    if (slot.child !== child) return;
    slot.child = undefined;
    if (this.stopping) return;
    if (Date.now() - slot.startedAt > HEALTHY_RUN_MS) slot.restarts = 0;
    const delay = Math.min(RESTART_DELAY_MS.max, RESTART_DELAY_MS.first * 2 ** slot.restarts);
    slot.restarts += 1;
    this.opts.log.error({ worker: slot.index, code, signal, restartInMs: delay }, 'serving process exited; starting it again');
    slot.timer = setTimeout(() => {
      slot.timer = undefined;
      if (this.stopping) return;
      this.launch(slot).then(
        () => this.opts.log.info({ worker: slot.index }, 'serving process started again'),
        (err: unknown) => this.opts.log.error({ worker: slot.index, err: (err as Error).message }, 'serving process failed to start again'),
      );
    }, delay);
    slot.timer.unref();
  }

  private async stopOne(slot: Slot): Promise<void> {
    clearTimeout(slot.timer);
    const child = slot.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const gone = new Promise<void>((ok) => child.once('exit', () => ok()));
    if (child.connected) child.send({ t: 'stop' } satisfies ToWorker);
    const kill = setTimeout(() => child.kill('SIGKILL'), STOP_TIMEOUT_MS);
    await gone;
    clearTimeout(kill);
  }

  private metricsOf(slot: Slot): Promise<object[] | undefined> {
    const child = slot.child;
    if (!child?.connected) return Promise.resolve(undefined);
    const id = (this.metricsCalls += 1);
    return new Promise((ok) => {
      const timer = setTimeout(() => {
        this.metricsWaiters.delete(id);
        ok(undefined);
      }, METRICS_TIMEOUT_MS);
      this.metricsWaiters.set(id, (m) => {
        clearTimeout(timer);
        ok(m);
      });
      child.send({ t: 'metrics', id } satisfies ToWorker);
    });
  }

  /** Forgets are sent in one message per turn of the event loop (eviction drops many at once). */
  private queueForget(digest: string): void {
    if (this.forgotten.push(digest) > 1) return;
    setImmediate(() => {
      const digests = this.forgotten;
      this.forgotten = [];
      for (const s of this.slots) if (s.child?.connected) s.child.send({ t: 'forget', digests } satisfies ToWorker);
    });
  }
}

/**
 * The public port must be free before serving processes bind it with SO_REUSEPORT, which would
 * otherwise share it with another Gantry's. The last run's serving processes may still be exiting
 * (they stop when their main process is gone): wait a little for them.
 */
async function portIsFree(host: string, port: number): Promise<void> {
  const deadline = Date.now() + PORT_FREE_WAIT_MS;
  for (;;) {
    try {
      await new Promise<void>((ok, fail) => {
        const probe = createNetServer();
        probe.once('error', fail);
        probe.listen({ host, port, exclusive: true }, () => probe.close(() => ok()));
      });
      return;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE' || Date.now() >= deadline) throw err;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}
