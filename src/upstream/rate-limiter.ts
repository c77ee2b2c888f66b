/**
 * Who is asking for upstream bandwidth. Client fills have someone waiting on them; background
 * work (prefetch) only gets what they leave.
 */
export type TransferPriority = 'client' | 'background';

type Waiter = { want: number; priority: TransferPriority; since: number; resolve: () => void };

/** Short bursts only: at most a tenth of a second of the rate, and never less than one 64 KiB read. */
const MIN_BURST_BYTES = 64 * 1024;
const REFILL_MS = 10;

/**
 * A token bucket in bytes per second, shared by every transfer it is given to, so a site's
 * uplink is never taken whole (`upstreamMaxBytesPerSecond`). Waiters are served in order,
 * client transfers first: a background transfer gets bytes only while no client transfer is
 * waiting, so prefetch slows down or pauses while clients wait on fills.
 */
export class ByteRateLimiter {
  readonly bytesPerSecond: number;
  private readonly burst: number;
  private tokens: number;
  private last: number;
  private readonly waiters: Waiter[] = [];
  private timer: NodeJS.Timeout | undefined;
  private readonly onWait: (priority: TransferPriority, ms: number) => void;
  private readonly now: () => number;

  constructor(bytesPerSecond: number, opts: { onWait?: (priority: TransferPriority, ms: number) => void; now?: () => number } = {}) {
    this.bytesPerSecond = bytesPerSecond;
    this.burst = Math.max(MIN_BURST_BYTES, Math.floor(bytesPerSecond / 10));
    this.tokens = this.burst;
    this.now = opts.now ?? (() => performance.now());
    this.last = this.now();
    this.onWait = opts.onWait ?? (() => undefined);
  }

  /**
   * Resolve once `n` bytes may be taken. A chunk larger than the burst is taken in one go once
   * the bucket is full (the bucket goes negative), so any chunk size works and the average holds.
   */
  take(n: number, priority: TransferPriority = 'client'): Promise<void> {
    this.refill();
    if (this.waiters.length === 0 && this.tokens >= Math.min(n, this.burst)) {
      this.tokens -= n;
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      this.waiters.push({ want: n, priority, since: this.now(), resolve });
      this.schedule();
    });
  }

  /** Waiters not served yet, by priority (for tests and the status page). */
  waiting(priority: TransferPriority): number {
    return this.waiters.filter((w) => w.priority === priority).length;
  }

  private refill(): void {
    const now = this.now();
    this.tokens = Math.min(this.burst, this.tokens + ((now - this.last) * this.bytesPerSecond) / 1000);
    this.last = now;
  }

  private schedule(): void {
    if (this.timer !== undefined || this.waiters.length === 0) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.serve();
    }, REFILL_MS);
    this.timer.unref();
  }

  private serve(): void {
    this.refill();
    for (;;) {
      const i = this.nextWaiter();
      const w = i === -1 ? undefined : this.waiters[i];
      if (!w || this.tokens < Math.min(w.want, this.burst)) break;
      this.waiters.splice(i, 1);
      this.tokens -= w.want;
      this.onWait(w.priority, this.now() - w.since);
      w.resolve();
    }
    this.schedule();
  }

  /** The first client waiter, else the first background one. */
  private nextWaiter(): number {
    const client = this.waiters.findIndex((w) => w.priority === 'client');
    return client !== -1 ? client : this.waiters.length > 0 ? 0 : -1;
  }
}

/**
 * Pass a body through every limiter that applies (global, per upstream), chunk by chunk. The
 * priority is asked per chunk: a background fill that a client joins goes on at client priority.
 */
export async function* throttled(
  body: AsyncIterable<Uint8Array>,
  limiters: readonly ByteRateLimiter[],
  priority: () => TransferPriority,
): AsyncGenerator<Uint8Array> {
  for await (const chunk of body) {
    for (const l of limiters) await l.take(chunk.length, priority());
    yield chunk;
  }
}
