import { Redis } from 'ioredis';
import type { Digest } from '../oci/digest.ts';
import type { Logger } from '../observability/logger.ts';
import type { Metrics } from '../observability/metrics.ts';

/** A fill lease lives this long unless its holder renews it: a node killed mid-fill frees it within this. */
const LEASE_MS = 6_000;
const RENEW_MS = 2_000;
/** A Redis that does not answer a command within this is treated as down for that command. */
const COMMAND_TIMEOUT_MS = 1_000;
const KEY_PREFIX = 'gantry:';

/** Who is downloading a blob for the cluster, and whether their download was made with a client's credential. */
export type LeaseHolder = { node: string; url: string; restricted: boolean };

/**
 * The answer to "who downloads this blob?": this node (it holds the lease and must release it
 * when its download ends), another node (stream from it), or nobody can say (Redis is down, or
 * this node's own earlier lease is still running out): download alone, as a single node does.
 */
export type FillLease = { kind: 'mine'; release(): Promise<void> } | { kind: 'peer'; holder: LeaseHolder } | { kind: 'alone' };

export type CoordinatorOptions = { url: string; nodeId: string; advertiseUrl: string; log: Logger; metrics: Metrics };

/**
 * What the nodes sharing a cache agree on through Redis (or Valkey). Redis is an optimisation
 * here, never a dependency: while it is unreachable every call answers "alone" at once (no
 * command waits on a dead server), the node works as a single node, logs it once, and rejoins
 * when ioredis reconnects.
 */
export class Coordinator {
  private readonly redis: Redis;
  private readonly node: string;
  private readonly url: string;
  private readonly log: Logger;
  private readonly metrics: Metrics;
  private up = false;
  private everUp = false;
  private readonly renewals = new Set<NodeJS.Timeout>();

  constructor(opts: CoordinatorOptions) {
    this.node = opts.nodeId;
    this.url = opts.advertiseUrl;
    this.log = opts.log.child({ coordinator: 'redis' });
    this.metrics = opts.metrics;
    this.redis = new Redis(opts.url, {
      // Commands fail at once while disconnected instead of queueing behind a reconnect.
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      commandTimeout: COMMAND_TIMEOUT_MS,
      connectTimeout: 2_000,
      retryStrategy: (times) => Math.min(250 * times, 2_000),
      lazyConnect: false,
    });
    this.metrics.redisUp.set(0);
    this.redis.on('ready', () => this.changed(true));
    this.redis.on('error', (err: Error) => this.changed(false, err));
    this.redis.on('end', () => this.changed(false));
    this.redis.on('close', () => this.changed(false));
  }

  /** Connected now. */
  get connected(): boolean {
    return this.up;
  }

  /** Wait (bounded) for the first connection, so a node that starts with Redis up shares fills from its first request. */
  async ready(timeoutMs: number): Promise<boolean> {
    if (this.up) return true;
    await new Promise<void>((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        this.redis.off('ready', done);
        resolve();
      };
      const timer = setTimeout(done, timeoutMs);
      this.redis.once('ready', done);
    });
    return this.up;
  }

  /**
   * Take the cluster's lease on downloading `digest`, or learn who has it. A lease taken is
   * renewed until released, so it outlives a slow download and expires soon after its holder dies.
   */
  fillLease(digest: Digest, restricted: boolean): Promise<FillLease> {
    const key = `${KEY_PREFIX}fill:${digest}`;
    const value = JSON.stringify({ node: this.node, url: this.url, restricted } satisfies LeaseHolder);
    return this.command<FillLease>({ kind: 'alone' }, async (r) => {
      if ((await r.set(key, value, 'PX', LEASE_MS, 'NX')) === 'OK') {
        this.metrics.leases.inc({ result: 'taken' });
        return { kind: 'mine', release: this.renewUntilReleased(key, value) };
      }
      const holder = parseHolder(await r.get(key));
      // Gone between the two commands: whoever asks next takes it; this download goes alone.
      if (!holder || holder.node === this.node) return { kind: 'alone' };
      this.metrics.leases.inc({ result: 'peer' });
      return { kind: 'peer', holder };
    });
  }

  /** The Redis connection for other cluster/ modules, while it is up. */
  client(): Redis | undefined {
    return this.up ? this.redis : undefined;
  }

  /** Keep a value for the other nodes for `ttlMs`; false when Redis cannot take it now. */
  put(name: string, value: string, ttlMs: number): Promise<boolean> {
    return this.command(false, async (r) => {
      await r.set(`${KEY_PREFIX}${name}`, value, 'PX', Math.max(1, Math.round(ttlMs)));
      return true;
    });
  }

  /** A value some node kept; undefined when there is none or Redis cannot be asked now. */
  get(name: string): Promise<string | undefined> {
    return this.command(undefined, async (r) => (await r.get(`${KEY_PREFIX}${name}`)) ?? undefined);
  }

  /** Who holds the lease on downloading `digest` now, without asking for it; undefined when nobody (or Redis is down). */
  holderOf(digest: Digest): Promise<LeaseHolder | undefined> {
    return this.command(undefined, async (r) => {
      const holder = parseHolder(await r.get(`${KEY_PREFIX}fill:${digest}`));
      return holder?.node === this.node ? undefined : holder;
    });
  }

  /**
   * Run `fn` against Redis; `fallback` at once while it is down, or when the command fails. For
   * the other cluster/ modules too, so every use of Redis falls back the same way.
   */
  async command<T>(fallback: T, fn: (redis: Redis) => Promise<T>): Promise<T> {
    if (!this.up) return fallback;
    try {
      return await fn(this.redis);
    } catch (err) {
      this.failed(err);
      return fallback;
    }
  }

  async close(): Promise<void> {
    for (const t of this.renewals) clearInterval(t);
    this.renewals.clear();
    this.redis.disconnect();
  }

  private renewUntilReleased(key: string, value: string): () => Promise<void> {
    const timer = setInterval(() => {
      this.redis.eval(RENEW, 1, key, value, String(LEASE_MS)).catch((err: unknown) => this.failed(err));
    }, RENEW_MS);
    timer.unref();
    this.renewals.add(timer);
    let released = false;
    return async () => {
      if (released) return;
      released = true;
      clearInterval(timer);
      this.renewals.delete(timer);
      if (!this.up) return; // it expires by itself
      await this.redis.eval(RELEASE, 1, key, value).catch((err: unknown) => this.failed(err));
    };
  }

  private failed(err: unknown): void {
    this.log.debug({ err: (err as Error).message }, 'redis command failed');
  }

  private changed(up: boolean, err?: Error): void {
    if (up === this.up) return;
    this.up = up;
    this.metrics.redisUp.set(up ? 1 : 0);
    if (up) {
      this.log.warn({ node: this.node }, this.everUp ? 'redis answers again; sharing fills with the other nodes' : 'connected to redis; sharing fills with the other nodes');
      this.everUp = true;
    } else {
      this.log.error({ err: err?.message }, 'redis unreachable; this node works alone until it answers again');
    }
  }
}

/** Renew only a lease this node still holds (its value is ours): never extend another node's. */
const RENEW = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end";
/** Delete only our own lease. */
const RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end";

function parseHolder(raw: string | null): LeaseHolder | undefined {
  if (raw === null) return undefined;
  try {
    const v = JSON.parse(raw) as Partial<LeaseHolder>;
    if (typeof v.node === 'string' && typeof v.url === 'string' && typeof v.restricted === 'boolean') return { node: v.node, url: v.url, restricted: v.restricted };
  } catch {
    // Not ours: treated as no holder.
  }
  return undefined;
}
