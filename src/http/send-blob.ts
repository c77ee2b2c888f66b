import type { ServerResponse } from 'node:http';
import { pipeline } from 'node:stream/promises';
import type { Readable } from 'node:stream';
import type { BufferPlan, ChunkSource } from '../proxy/chunk-source.ts';
import type { Logger } from '../observability/logger.ts';
import type { RequestStats } from './app-env.ts';

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
  body: ChunkSource | Readable | undefined,
  stats: RequestStats,
  log: Logger,
  plan: BufferPlan = { count: 4, bytes: 64 * 1024 },
): void {
  out.writeHead(status, headers);
  if (!body) {
    out.end();
    return;
  }
  const done = 'pipe' in body ? pipeStream(body, out, stats) : pump(body, out, stats, plan);
  done.catch((err: unknown) => {
    const code = (err as { code?: string }).code;
    // The client left (or its socket was already gone): not our failure.
    if (code === 'ERR_STREAM_PREMATURE_CLOSE' || code === 'ERR_STREAM_UNABLE_TO_PIPE' || code === 'ERR_STREAM_DESTROYED' || out.destroyed) return;
    log.warn({ err: (err as Error).message }, 'blob stream aborted');
  });
}

async function pipeStream(body: Readable, out: ServerResponse, stats: RequestStats): Promise<void> {
  body.on('data', (chunk: Buffer) => {
    stats.bytes += chunk.length;
  });
  await pipeline(body, out);
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
