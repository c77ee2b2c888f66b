import type { ServerResponse } from 'node:http';
import { classifyIoError } from '../io/io-error.ts';
import type { Logger } from '../observability/logger.ts';
import { onClose, type ChunkSource } from '../store/chunk-source.ts';
import type { RequestStats } from './app-env.ts';

/** How a response reuses its buffers: `count` of `bytes` each per request, each reused once the socket has written it. */
export type BufferPlan = { count: number; bytes: number };

const FEW_STREAMS = 8;
const BIG_BUFFERS: BufferPlan = { count: 3, bytes: 1024 * 1024 };
// Two: one being written by the socket while the next is read (50 readers of one fill: 6 MiB).
const SMALL_BUFFERS: BufferPlan = { count: 2, bytes: 64 * 1024 };
// Stored blobs under fan-out: every read is a thread-pool round trip costing ~17 µs of event-loop
// time here, so 256 KiB reads rather than 64 KiB took warm 4 MiB blobs at 64 connections from
// ~170 to ~240 req/s, for at most 512 KiB per stream (32 MiB at 64 streams).
const FANOUT_STORED: BufferPlan = { count: 2, bytes: 256 * 1024 };

/** A blob body as the pull-through side hands it over (see OpenedBlob). */
export type BlobBody = { body: Buffer | ChunkSource; stored: boolean };

/**
 * Sends blob bodies, choosing each response's buffers: small blobs from
 * memory in one write; stored blobs through large buffers while few stream
 * (fewer syscalls for one big pull) and medium ones under fan-out, so many
 * clients don't multiply into hundreds of MiB; bytes still arriving through
 * small ones.
 */
export class BlobSender {
  private storedStreams = 0;

  send(out: ServerResponse, status: number, headers: Record<string, string | number>, blob: BlobBody, stats: RequestStats, log: Logger): void {
    const { body } = blob;
    if (Buffer.isBuffer(body)) {
      stats.bytes = body.length;
      out.writeHead(status, headers);
      out.end(body);
      return;
    }
    if (!blob.stored) {
      sendBody(out, status, headers, body, stats, log, SMALL_BUFFERS);
      return;
    }
    const plan = this.storedStreams < FEW_STREAMS ? BIG_BUFFERS : FANOUT_STORED;
    this.storedStreams += 1;
    sendBody(out, status, headers, onClose(body, () => (this.storedStreams -= 1)), stats, log, plan);
  }
}

/**
 * Stream a blob body straight to the Node response. Going around the
 * web-stream adapter keeps the hot path cheap and gives us the one behaviour
 * the protocol needs on failure: if the source errors (bad digest, upstream
 * cut), the socket is destroyed, so the client sees an aborted transfer
 * rather than a short body it might accept.
 */
export function sendBody(
  out: ServerResponse,
  status: number,
  headers: Record<string, string | number>,
  body: ChunkSource | undefined,
  stats: RequestStats,
  log: Logger,
  plan: BufferPlan = { count: 4, bytes: 64 * 1024 },
): void {
  out.writeHead(status, headers);
  if (!body) {
    out.end();
    return;
  }
  const done = pump(body, out, stats, plan);
  done.catch((err: unknown) => {
    const kind = classifyIoError(err);
    // The client left (or its socket was already gone): not our failure.
    if (kind === 'cut' || kind === 'client_gone' || out.destroyed) return;
    log.warn({ err: (err as Error).message }, 'blob stream aborted');
  });
}

/**
 * Copy a ChunkSource to the response through `plan.count` recycled buffers.
 * A buffer goes back to the free list only in its write callback, when the
 * socket no longer references it. Shared chunks (a fill's recent window) are
 * written as they are; 'drain' bounds those.
 */
async function pump(source: ChunkSource, out: ServerResponse, stats: RequestStats, plan: BufferPlan): Promise<void> {
  const free: Buffer[] = [];
  let allocated = 0;
  let wake: (() => void) | undefined;
  const poke = (): void => {
    const w = wake;
    wake = undefined;
    w?.();
  };
  const settle = (): Promise<void> => new Promise<void>((r) => (wake = r));
  out.on('drain', poke);
  out.on('close', poke);
  try {
    for (;;) {
      if (out.destroyed) return;
      if (out.writableNeedDrain) {
        await settle();
        continue;
      }
      let buf = free.pop();
      if (!buf && allocated < plan.count) {
        allocated += 1;
        // Slow: a whole ArrayBuffer of its own, never a slice of Node's shared pool.
        buf = Buffer.allocUnsafeSlow(plan.bytes);
      }
      if (!buf) {
        await settle();
        continue;
      }
      let chunk: Buffer | null;
      try {
        chunk = await source.read(buf);
      } catch (err) {
        out.destroy(err as Error);
        throw err;
      }
      if (chunk === null) {
        out.end();
        return;
      }
      stats.bytes += chunk.length;
      if (chunk.buffer === buf.buffer) {
        const mine = buf;
        out.write(chunk, () => {
          free.push(mine);
          poke();
        });
      } else {
        free.push(buf);
        out.write(chunk);
      }
    }
  } finally {
    source.close();
    out.off('drain', poke);
    out.off('close', poke);
  }
}
