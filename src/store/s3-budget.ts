import { LRUCache } from 'lru-cache';
import type { Digest } from '../oci/digest.ts';
import type { Logger } from '../observability/logger.ts';
import type { Metrics } from '../observability/metrics.ts';

/** A touch of the same object is recorded at most this often per node: recency needs minutes, not every read. */
const TOUCH_EVERY_MS = 60_000;
/** Objects deleted per round trip of a sweep. */
const BATCH = 100;

/** An object of the shared tier, as listed. */
export type StoredObject = { digest: Digest; size: number; lastModified: number };

/** What the budget needs from the bucket. */
export interface BudgetedStore {
  list(): AsyncIterable<StoredObject>;
  remove(digest: Digest): Promise<void>;
}

/**
 * When each object of the shared tier was last read, for the whole cluster (Redis: a sorted set
 * by last access, sizes and their sum), so the least recently used go first. Objects in S3 have
 * no access time, and recording one in their metadata would rewrite each object (CopyObject) on
 * every read. The index is rebuilt from a listing when Redis lost it (no persistence needed).
 */
export interface RecencyIndex {
  /** False while Redis cannot be asked: nothing is swept then (no node could take the sweep lease). */
  readonly available: boolean;
  add(digest: Digest, size: number, at: number): Promise<void>;
  touch(digest: Digest, at: number): Promise<void>;
  /** The least recently used first, after the `skip` oldest; `size` undefined for a blob used but never stored in the tier. */
  oldest(n: number, skip?: number): Promise<Array<{ digest: Digest; size: number | undefined }>>;
  remove(digest: Digest): Promise<void>;
  totalBytes(): Promise<number>;
  built(): Promise<boolean>;
  markBuilt(): Promise<void>;
  /** The sweep is one node's job at a time: true when this node holds it for `ttlMs`. */
  takeSweep(ttlMs: number): Promise<boolean>;
}

export type S3BudgetOptions = {
  store: BudgetedStore;
  /** The cluster's recency index; without one (no Redis), objects go oldest first, by a listing each sweep. */
  index: RecencyIndex | undefined;
  maxBytes: number;
  lowWatermarkPercent: number;
  sweepMs: number;
  /** Objects a pin names are never deleted (the cluster's pins, when the nodes share them). */
  isPinned?: (digest: Digest) => boolean;
  /** Run before each sweep: catch up with pins made elsewhere since the last one. */
  beforeSweep?: () => Promise<void>;
  log: Logger;
  metrics: Metrics;
};

/**
 * The shared tier's size budget: past `maxBytes`, the least recently used objects are deleted
 * until `lowWatermarkPercent` of it is left, skipping pinned ones. One node sweeps at a time (a
 * lease in Redis).
 * Deleting an object a node is reading does not cut that read (S3 keeps serving a GET in
 * progress), and a later miss fetches it again.
 */
export class S3Budget {
  private readonly opts: S3BudgetOptions;
  private readonly touched = new LRUCache<string, number>({ max: 100_000 });
  private timer: NodeJS.Timeout | undefined;
  private sweeping: Promise<void> | undefined;

  constructor(opts: S3BudgetOptions) {
    this.opts = opts;
  }

  start(): void {
    this.timer = setInterval(() => void this.sweep(), this.opts.sweepMs);
    this.timer.unref();
  }

  async close(): Promise<void> {
    clearInterval(this.timer);
    await this.sweeping;
  }

  /** An object was completed in the bucket. */
  stored(digest: Digest, size: number): void {
    this.touched.set(digest, Date.now());
    void this.opts.index?.add(digest, size, Date.now()).catch(() => undefined);
  }

  /** An object was read from the bucket. */
  read(digest: Digest): void {
    const now = Date.now();
    const last = this.touched.get(digest);
    if (last !== undefined && now - last < TOUCH_EVERY_MS) return;
    this.touched.set(digest, now);
    void this.opts.index?.touch(digest, now).catch(() => undefined);
  }

  /** One sweep now (the timer's job; tests call it). Rounds never overlap. */
  sweep(): Promise<void> {
    this.sweeping ??= this.sweepOnce()
      .catch((err: unknown) => this.opts.log.warn({ err: (err as Error).message }, 'shared tier budget sweep failed; trying again next round'))
      .finally(() => (this.sweeping = undefined));
    return this.sweeping;
  }

  private async sweepOnce(): Promise<void> {
    const { index, maxBytes, lowWatermarkPercent } = this.opts;
    const low = Math.floor((maxBytes * lowWatermarkPercent) / 100);
    if (!index) {
      await this.sweepByListing(low);
      return;
    }
    if (!index.available || !(await index.takeSweep(this.opts.sweepMs * 2))) return;
    if (!(await index.built())) await this.rebuild(index);
    let total = await index.totalBytes();
    this.opts.metrics.sharedTierBytes.set(total);
    if (total <= maxBytes) return;
    await this.opts.beforeSweep?.();
    // Pinned objects stay where they are in the order: the next batch starts after them.
    let kept = 0;
    while (total > low) {
      const victims = await index.oldest(BATCH, kept);
      if (victims.length === 0) break;
      for (const v of victims) {
        if (total <= low) break;
        if (this.pinned(v.digest)) {
          kept += 1;
          continue;
        }
        if (v.size !== undefined) {
          await this.evict(v.digest, v.size);
          total -= v.size;
        }
        await index.remove(v.digest);
      }
    }
    this.opts.metrics.sharedTierBytes.set(await index.totalBytes());
  }

  /** Without Redis: the listing is the index, oldest upload first. */
  private async sweepByListing(low: number): Promise<void> {
    const all: StoredObject[] = [];
    for await (const o of this.opts.store.list()) all.push(o);
    let total = all.reduce((n, o) => n + o.size, 0);
    this.opts.metrics.sharedTierBytes.set(total);
    if (total <= this.opts.maxBytes) return;
    await this.opts.beforeSweep?.();
    all.sort((a, b) => a.lastModified - b.lastModified);
    for (const o of all) {
      if (total <= low) break;
      if (this.pinned(o.digest)) continue;
      await this.evict(o.digest, o.size);
      total -= o.size;
    }
    this.opts.metrics.sharedTierBytes.set(total);
  }

  private pinned(digest: Digest): boolean {
    return this.opts.isPinned?.(digest) ?? false;
  }

  private async rebuild(index: RecencyIndex): Promise<void> {
    let n = 0;
    for await (const o of this.opts.store.list()) {
      await index.add(o.digest, o.size, o.lastModified);
      n += 1;
    }
    await index.markBuilt();
    this.opts.log.info({ objects: n }, 'shared tier recency index rebuilt from a listing of the bucket');
  }

  private async evict(digest: Digest, size: number): Promise<void> {
    await this.opts.store.remove(digest);
    this.touched.delete(digest);
    this.opts.metrics.sharedEvictions.inc();
    this.opts.metrics.sharedEvictedBytes.inc(size);
  }
}
