import { EventEmitter } from 'node:events';
import { classifyIoError, isTimeout } from '../io/io-error.ts';
import type { Digest } from '../oci/digest.ts';
import { BlobMismatchError, type BlobWriter, type ByteRange } from '../store/blob-store-api.ts';
import { lazySource, type ChunkSource } from '../store/chunk-source.ts';

// Halving both (from 4 and 8 MiB) took 50-client peak RSS in the bench from 147-187 to 145-156 MiB
// with no loss in time: at 100 MB/s, 4 MiB is 40 ms of download for followers to keep up within.
const MAX_PENDING_WRITE_BYTES = 2 * 1024 * 1024;
const RECENT_WINDOW_BYTES = 4 * 1024 * 1024;

export type FillOutcome = 'committed' | 'digest_mismatch' | 'size_mismatch' | 'upstream_error' | 'timeout' | 'write_error';

export class FillError extends Error {
  readonly outcome: FillOutcome;
  constructor(outcome: FillOutcome, message: string, cause?: unknown) {
    super(message, { cause });
    this.name = 'FillError';
    this.outcome = outcome;
  }
}

export type FillOptions = {
  digest: Digest;
  /** From the upstream's Content-Length; undefined when it sent none. */
  expectedSize: number | undefined;
  /** Where the bytes go; its commit verifies and publishes them. The fill owns it from here on. */
  writer: BlobWriter;
  /** The committed blob, for readers that arrive after the fill released its writer. */
  openCommitted: (range: ByteRange) => Promise<ChunkSource | undefined>;
};

/**
 * One download of one blob into a BlobWriter, which hashes it as it lands.
 * Any number of readers tail the growing blob (read back from the writer), so
 * followers stream while the bytes arrive and a slow reader falls behind on
 * disk, not in memory.
 *
 * The last byte of what a reader asked for is held back until the digest is
 * verified: a client can never receive a complete, unverified body. On a
 * mismatch every reader is destroyed, which aborts its connection.
 */
export class Fill extends EventEmitter {
  readonly digest: Digest;
  readonly expectedSize: number | undefined;
  /** Bytes on disk, readable by tail readers. */
  written = 0;
  /** Bytes received from the upstream (some may still be queued for the disk). */
  private received = 0;
  private pending: Uint8Array[] = [];
  private pendingBytes = 0;
  private flushing: Promise<void> | undefined;
  private writeError: unknown;
  private recent: Array<{ pos: number; buf: Buffer }> = [];
  private recentBytes = 0;
  state: 'filling' | 'committed' | 'failed' = 'filling';
  error: FillError | undefined;
  /** Resolves when the fill has ended, either way; never rejects. */
  readonly done: Promise<void>;
  private readonly opts: FillOptions;
  private readonly writer: BlobWriter;
  private refs = 1; // the download's own reference
  private closed = false;
  private resolveDone!: () => void;

  constructor(opts: FillOptions) {
    super();
    this.setMaxListeners(0);
    this.writer = opts.writer;
    this.opts = opts;
    this.digest = opts.digest;
    this.expectedSize = opts.expectedSize;
    this.done = new Promise((r) => (this.resolveDone = r));
  }

  /** Drive the download to the end. Never throws; the outcome is in state/error. */
  async run(body: AsyncIterable<Uint8Array>): Promise<FillOutcome> {
    try {
      try {
        for await (const chunk of body) {
          if (this.expectedSize !== undefined && this.received + chunk.length > this.expectedSize) {
            throw new FillError('size_mismatch', `upstream sent more than ${this.expectedSize} bytes`);
          }
          this.received += chunk.length;
          await this.enqueueWrite(chunk);
        }
        await this.drainWrites();
      } catch (err) {
        if (err instanceof FillError) throw err;
        // Writer errors arrive as FillError('write_error'); anything else came from the upstream body.
        throw new FillError(isTimeout(classifyIoError(err)) ? 'timeout' : 'upstream_error', (err as Error).message, err);
      }
      if (this.expectedSize !== undefined && this.received !== this.expectedSize) {
        throw new FillError('size_mismatch', `upstream sent ${this.received} of ${this.expectedSize} bytes`);
      }
      await this.writer.commit(this.expectedSize);
      this.state = 'committed';
      return 'committed';
    } catch (err) {
      this.error = toFillError(err);
      this.state = 'failed';
      await this.writer.abort().catch(() => undefined);
      return this.error.outcome;
    } finally {
      // Readers still going finish from the writer; the window's memory goes now.
      this.recent = [];
      this.recentBytes = 0;
      this.emit('change');
      this.resolveDone();
      await this.release();
    }
  }

  /**
   * Write-behind: chunks queue up while one batched write (writev) is on the
   * disk, so the upstream keeps flowing and the thread pool sees one write per
   * batch instead of one per network chunk. The queue is bounded: past
   * MAX_PENDING_WRITE_BYTES the download waits for the disk.
   */
  private async enqueueWrite(chunk: Uint8Array): Promise<void> {
    if (this.writeError) throw toWriteError(this.writeError);
    this.pending.push(chunk);
    this.pendingBytes += chunk.length;
    this.flushing ??= this.flushPending().catch((err: unknown) => {
      this.writeError = err;
    });
    if (this.pendingBytes >= MAX_PENDING_WRITE_BYTES) await this.flushing;
  }

  private async drainWrites(): Promise<void> {
    while (this.flushing) await this.flushing;
    if (this.writeError) throw toWriteError(this.writeError);
  }

  private async flushPending(): Promise<void> {
    try {
      while (this.pending.length > 0) {
        const batch = this.pending;
        this.pending = [];
        this.pendingBytes = 0;
        const position = this.written;
        await this.writer.write(batch);
        this.remember(batch, position);
        this.written = this.writer.written;
        this.emit('change');
      }
    } finally {
      this.flushing = undefined;
    }
  }

  /**
   * Keep the latest written chunks in memory (a bounded window), so readers
   * keeping up with the download get the very same Buffers instead of each
   * reading its own copy back from disk: 50 followers cost one allocation per
   * chunk, not 50. Readers that fall behind the window read from disk.
   */
  private remember(batch: Uint8Array[], position: number): void {
    let pos = position;
    for (const chunk of batch) {
      this.recent.push({ pos, buf: Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength) });
      this.recentBytes += chunk.length;
      pos += chunk.length;
    }
    while (this.recentBytes > RECENT_WINDOW_BYTES && this.recent.length > 1) {
      this.recentBytes -= this.recent.shift()?.buf.length ?? 0;
    }
  }

  /** Bytes at `position` (up to `max`) from the in-memory window, without copying; undefined if not there. */
  recentAt(position: number, max: number): Buffer | undefined {
    const first = this.recent[0];
    if (!first || position < first.pos) return undefined;
    for (let i = this.recent.length - 1; i >= 0; i--) {
      const c = this.recent[i];
      if (c && c.pos <= position) {
        const off = position - c.pos;
        return off < c.buf.length ? c.buf.subarray(off, off + Math.min(max, c.buf.length - off)) : undefined;
      }
    }
    return undefined;
  }

  /**
   * Bytes [start, end) of the blob as they become available; `end`
   * undefined means to the end of the blob.
   */
  openSource(start = 0, end?: number): ChunkSource {
    if (this.closed) {
      // A request can pick this fill from the in-flight map just as it ends.
      if (this.state === 'committed') {
        const range = { start, end: end ?? this.written };
        return lazySource(() => this.opts.openCommitted(range));
      }
      const err = this.error ?? new Error('fill ended');
      return { read: () => Promise.reject(err), close: () => undefined };
    }
    this.refs += 1;
    return new TailSource(this, start, end);
  }

  /** The local file the download is being written to, while it is (see BlobWriter.path). */
  get writingFile(): string | undefined {
    return this.state === 'filling' ? this.writer.path : undefined;
  }

  /** Positional read for readers; they hold a reference so the handle outlives them. */
  readAt(buf: Buffer, position: number): Promise<number> {
    return this.writer.readAt(buf, position);
  }

  async release(): Promise<void> {
    this.refs -= 1;
    if (this.refs === 0) {
      this.closed = true;
      await this.writer.close().catch(() => undefined);
    }
  }

  /** Bytes a reader whose range ends at `end` may take now (see the class comment on holding back). */
  readableLimit(end: number | undefined): number {
    if (this.state === 'committed') return end === undefined ? this.written : Math.min(end, this.written);
    const target = end ?? this.expectedSize;
    return target === undefined ? this.written : Math.min(this.written, target - 1);
  }
}

/** Errors from the writer are the disk's, whatever they look like. */
function toWriteError(err: unknown): FillError {
  return err instanceof FillError ? err : new FillError('write_error', (err as Error).message, err);
}

function toFillError(err: unknown): FillError {
  if (err instanceof FillError) return err;
  if (err instanceof BlobMismatchError) {
    return new FillError(err.kind === 'digest' ? 'digest_mismatch' : 'size_mismatch', `upstream ${err.message}`, err);
  }
  return new FillError('write_error', (err as Error).message, err);
}

/** A reader tailing a fill: shared window chunks when it keeps up, reads back from the writer when not. */
class TailSource implements ChunkSource {
  private readonly fill: Fill;
  private pos: number;
  private readonly end: number | undefined;
  private released = false;

  constructor(fill: Fill, start: number, end: number | undefined) {
    this.fill = fill;
    this.pos = start;
    this.end = end;
  }

  async read(buf: Buffer): Promise<Buffer | null> {
    const fill = this.fill;
    for (;;) {
      if (this.released) throw new Error('source closed');
      if (fill.state === 'failed') throw fill.error ?? new Error('fill failed');
      const limit = fill.readableLimit(this.end);
      if (fill.state === 'committed' && this.pos >= limit) return null;
      if (this.pos < limit) {
        const shared = fill.recentAt(this.pos, limit - this.pos);
        if (shared) {
          this.pos += shared.length;
          return shared;
        }
        const n = await fill.readAt(buf.subarray(0, Math.min(buf.length, limit - this.pos)), this.pos);
        if (n === 0) throw new Error(`fill file ended at ${this.pos} of ${limit} readable bytes`);
        this.pos += n;
        return buf.subarray(0, n);
      }
      await new Promise<void>((resolve) => fill.once('change', resolve));
    }
  }

  close(): void {
    if (this.released) return;
    this.released = true;
    void this.fill.release();
  }
}
