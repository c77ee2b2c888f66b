import type { Redis } from 'ioredis';
import type { Logger } from '../observability/logger.ts';
import type { ContentCache, UnpinRecord } from '../store/content-cache.ts';
import { tagKey, type PinRecord } from '../store/index-store.ts';
import { isDigestLike } from '../oci/digest.ts';

/** How often a node compares its pins with the cluster's (a change made here is shared at once). */
const SYNC_MS = 5_000;
/** A release is remembered this long in Redis, as in each node's index. */
const UNPIN_MEMORY_MS = 30 * 24 * 3600 * 1000;
const PINS = 'gantry:pins';
/** Field → time of the latest pin or release of that reference; a field absent from PINS is a release. */
const TIMES = 'gantry:pin-times';

export type PinnedCache = Pick<ContentCache, 'pins' | 'pin' | 'unpin' | 'unpinned' | 'onPinChange'>;

/** The latest thing that happened to a pinned reference, on one side. */
type PinEvent = { kind: 'pin'; at: number; pin: PinRecord } | { kind: 'unpin'; at: number };

export type PinAction =
  | { do: 'pin-here'; pin: PinRecord }
  | { do: 'unpin-here'; pin: PinRecord; at: number }
  | { do: 'pin-there'; pin: PinRecord }
  | { do: 'unpin-there'; key: string; at: number };

export type PinSides = {
  localPins: ReadonlyMap<string, PinRecord>;
  localUnpins: ReadonlyMap<string, number>;
  remotePins: ReadonlyMap<string, PinRecord>;
  /** Key → time of the latest event Redis holds (a pin's pinnedAt, or a release). */
  remoteTimes: ReadonlyMap<string, number>;
};

/**
 * What to do so that this node and Redis agree: for each reference, the latest event on either
 * side wins (a pin again replaces a pin; a release at the same millisecond as a pin wins). Pure,
 * so the rule is tested without Redis.
 */
export function planPinSync(s: PinSides): PinAction[] {
  const keys = new Set([...s.localPins.keys(), ...s.localUnpins.keys(), ...s.remoteTimes.keys()]);
  const actions: PinAction[] = [];
  for (const key of keys) {
    const local = latest(pinEvent(s.localPins.get(key)), unpinEvent(s.localUnpins.get(key)));
    const remote = remoteEvent(key, s);
    const winner = latest(local, remote);
    if (!winner) continue;
    const here = s.localPins.get(key);
    if (winner.kind === 'pin') {
      if (here?.pinnedAt !== winner.pin.pinnedAt) actions.push({ do: 'pin-here', pin: winner.pin });
      if (remote?.kind !== 'pin' || remote.at !== winner.at) actions.push({ do: 'pin-there', pin: winner.pin });
    } else {
      if (here) actions.push({ do: 'unpin-here', pin: here, at: winner.at });
      if (remote?.kind !== 'unpin' || remote.at < winner.at) actions.push({ do: 'unpin-there', key, at: winner.at });
    }
  }
  return actions;
}

function remoteEvent(key: string, s: PinSides): PinEvent | undefined {
  const at = s.remoteTimes.get(key);
  if (at === undefined) return undefined;
  const pin = s.remotePins.get(key);
  return pin ? { kind: 'pin', at, pin } : { kind: 'unpin', at };
}

function pinEvent(pin: PinRecord | undefined): PinEvent | undefined {
  return pin ? { kind: 'pin', at: pin.pinnedAt, pin } : undefined;
}

function unpinEvent(at: number | undefined): PinEvent | undefined {
  return at === undefined ? undefined : { kind: 'unpin', at };
}

function latest(a: PinEvent | undefined, b: PinEvent | undefined): PinEvent | undefined {
  if (!a || !b) return a ?? b;
  if (a.at !== b.at) return a.at > b.at ? a : b;
  return a.kind === 'unpin' ? a : b;
}

/**
 * Pins for the whole cluster: a pin made on any node (prefetch with pin, import --pin, and their
 * releases) is in Redis and, within a few seconds, in every node's index, where it keeps that
 * node's copies and (cluster-wide) the shared tier's objects out of eviction. Each node keeps its
 * pins in its own index too, so a node started while Redis is down still keeps them; changes made
 * apart (Redis down, a cache changed offline with `gantry import`) are merged when they meet
 * again, latest first. Times come from the nodes' clocks: keep them in sync (NTP).
 */
export class SharedPins {
  private readonly cache: PinnedCache;
  private readonly redis: () => Redis | undefined;
  private readonly log: Logger;
  private readonly syncMs: number;
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private again = false;
  private applying = false;

  constructor(opts: { cache: PinnedCache; redis: () => Redis | undefined; log: Logger; syncMs?: number }) {
    this.cache = opts.cache;
    this.redis = opts.redis;
    this.log = opts.log.child({ pins: 'shared' });
    this.syncMs = opts.syncMs ?? SYNC_MS;
  }

  start(): void {
    this.cache.onPinChange(() => {
      if (!this.applying) void this.sync();
    });
    this.timer = setInterval(() => void this.sync(), this.syncMs);
    this.timer.unref();
    void this.sync();
  }

  async close(): Promise<void> {
    clearInterval(this.timer);
    await this.running;
  }

  /** Agree with Redis now; a call while a round runs queues one more round. Never throws. */
  sync(): Promise<void> {
    if (this.running) {
      this.again = true;
      return this.running;
    }
    this.running = this.round()
      .catch((err: unknown) => this.log.debug({ err: (err as Error).message }, 'pins not shared this round; trying again'))
      .finally(() => {
        this.running = undefined;
        if (this.again) {
          this.again = false;
          void this.sync();
        }
      });
    return this.running;
  }

  private async round(): Promise<void> {
    const redis = this.redis();
    if (!redis) return;
    const [rawPins, rawTimes] = await Promise.all([redis.hgetall(PINS), redis.hgetall(TIMES)]);
    const sides: PinSides = {
      localPins: new Map(this.cache.pins().map((p) => [tagKey(p.upstream, p.repo, p.reference), recordOf(p)])),
      localUnpins: new Map((await this.cache.unpinned()).map((u: UnpinRecord) => [tagKey(u.upstream, u.repo, u.reference), u.unpinnedAt])),
      remotePins: parsePins(rawPins),
      remoteTimes: parseTimes(rawTimes),
    };
    await this.apply(redis, planPinSync(sides));
    await this.forgetOldReleases(redis, sides);
  }

  private async apply(redis: Redis, actions: readonly PinAction[]): Promise<void> {
    this.applying = true;
    try {
      for (const a of actions) {
        if (a.do === 'pin-here') {
          await this.cache.pin(a.pin);
          this.log.info({ upstream: a.pin.upstream, repo: a.pin.repo, reference: a.pin.reference }, 'pin made on another node applied here');
        } else if (a.do === 'unpin-here') {
          await this.cache.unpin(a.pin.upstream, a.pin.repo, a.pin.reference, a.at);
          this.log.info({ upstream: a.pin.upstream, repo: a.pin.repo, reference: a.pin.reference }, 'pin released on another node released here');
        } else if (a.do === 'pin-there') {
          await redis.eval(PUT_IF_NEWER, 2, PINS, TIMES, tagKey(a.pin.upstream, a.pin.repo, a.pin.reference), String(a.pin.pinnedAt), JSON.stringify(a.pin));
        } else {
          await redis.eval(PUT_IF_NEWER, 2, PINS, TIMES, a.key, String(a.at), '');
        }
      }
    } finally {
      this.applying = false;
    }
  }

  private async forgetOldReleases(redis: Redis, s: PinSides): Promise<void> {
    const cutoff = Date.now() - UNPIN_MEMORY_MS;
    const old = [...s.remoteTimes].filter(([key, at]) => at < cutoff && !s.remotePins.has(key)).map(([key]) => key);
    if (old.length > 0) await redis.hdel(TIMES, ...old);
  }
}

/**
 * Write a pin (ARGV[3] its record) or a release (ARGV[3] empty) only if it is newer than what
 * Redis holds for that reference, both hashes at once: two nodes sharing at the same moment
 * cannot put an older state back.
 */
const PUT_IF_NEWER = `
local cur = redis.call('hget', KEYS[2], ARGV[1])
if cur and tonumber(cur) > tonumber(ARGV[2]) then return 0 end
if cur and tonumber(cur) == tonumber(ARGV[2]) and ARGV[3] ~= '' then return 0 end
redis.call('hset', KEYS[2], ARGV[1], ARGV[2])
if ARGV[3] == '' then redis.call('hdel', KEYS[1], ARGV[1]) else redis.call('hset', KEYS[1], ARGV[1], ARGV[3]) end
return 1`;

function recordOf(p: PinRecord): PinRecord {
  return { upstream: p.upstream, repo: p.repo, reference: p.reference, digests: p.digests, pinnedAt: p.pinnedAt };
}

/** Pins as Redis holds them; a value that is not one (written by something else) is left out. */
export function parsePins(raw: Record<string, string>): Map<string, PinRecord> {
  const out = new Map<string, PinRecord>();
  for (const [key, json] of Object.entries(raw)) {
    try {
      const v = JSON.parse(json) as Partial<PinRecord>;
      if (typeof v.upstream !== 'string' || typeof v.repo !== 'string' || typeof v.reference !== 'string' || typeof v.pinnedAt !== 'number') continue;
      if (!Array.isArray(v.digests) || !v.digests.every((d) => typeof d === 'string' && isDigestLike(d))) continue;
      if (tagKey(v.upstream, v.repo, v.reference) !== key) continue;
      out.set(key, { upstream: v.upstream, repo: v.repo, reference: v.reference, digests: v.digests, pinnedAt: v.pinnedAt });
    } catch {
      // Not ours.
    }
  }
  return out;
}

function parseTimes(raw: Record<string, string>): Map<string, number> {
  const out = new Map<string, number>();
  for (const [key, at] of Object.entries(raw)) if (Number.isFinite(Number(at))) out.set(key, Number(at));
  return out;
}
