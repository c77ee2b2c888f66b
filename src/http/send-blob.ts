import type { ServerResponse } from 'node:http';
import { pipeline } from 'node:stream/promises';
import type { Readable } from 'node:stream';
import type { Logger } from '../observability/logger.ts';
import type { RequestStats } from './app-env.ts';

/**
 * Stream a blob body straight to the Node response. Going around the
 * web-stream adapter keeps the hot path cheap and gives us the one behaviour
 * the protocol needs on failure: if the source errors (bad digest, upstream
 * cut), pipeline() destroys the socket, so the client sees an aborted
 * transfer rather than a short body it might accept.
 */
export function sendBody(
  out: ServerResponse,
  status: number,
  headers: Record<string, string | number>,
  body: Readable | undefined,
  stats: RequestStats,
  log: Logger,
): void {
  out.writeHead(status, headers);
  if (!body) {
    out.end();
    return;
  }
  body.on('data', (chunk: Buffer) => {
    stats.bytes += chunk.length;
  });
  pipeline(body, out).catch((err: unknown) => {
    const code = (err as { code?: string }).code;
    // The client left (or its socket was already gone): not our failure.
    if (code === 'ERR_STREAM_PREMATURE_CLOSE' || code === 'ERR_STREAM_UNABLE_TO_PIPE' || code === 'ERR_STREAM_DESTROYED' || out.destroyed) return;
    log.warn({ err: (err as Error).message }, 'blob stream aborted');
  });
}
