import { pino, type Logger, type DestinationStream } from 'pino';

export type { Logger };

/**
 * JSON logs. Credentials never reach a log line: request/response headers
 * are not logged wholesale, and the usual secret-bearing paths are redacted
 * in case a future call site logs an object that carries one.
 */
export function createLogger(level: string, destination: DestinationStream = stdoutWithoutBlocking()): Logger {
  return pino(
    {
      level,
      base: { svc: 'gantry' },
      redact: {
        paths: [
          'authorization', '*.authorization', '*.*.authorization',
          'password', '*.password', '*.*.password',
          'token', '*.token', 'headers.cookie', 'adminToken', '*.adminToken', 'peerToken', '*.peerToken', '*.*.peerToken',
        ],
        censor: '[redacted]',
      },
    },
    destination,
  );
}

/**
 * stdout written from a buffer by libuv's thread pool, never by the event loop: a log reader that
 * falls behind (a full pipe to journald or a container runtime) must not stall every request, as
 * a synchronous write does (p99 of cached manifests went from ~220 to ~520 ms at 64 connections
 * with the access log on). pino flushes it at exit; a `kill -9` loses what is still buffered, and
 * beyond 16 MiB waiting, lines are dropped rather than memory taken. Each write is whole lines of
 * at most PIPE_BUF (4 KiB) bytes: serving processes share this stdout, and a pipe keeps writes of
 * that size whole, so their lines never interleave mid-line.
 */
export function stdoutWithoutBlocking(): DestinationStream {
  return pino.destination({ dest: 1, sync: false, maxLength: 16 * 1024 * 1024, maxWrite: PIPE_BUF });
}

const PIPE_BUF = 4096;

/**
 * The access log: one line per request with fixed fields (method, path, status, sizes, cache
 * result), none of which can carry a credential, so without the redaction the general logger
 * does, which costs ~30 µs per line (wildcard paths), a tenth of a cached manifest's CPU.
 */
export function accessLogger(log: Logger): Logger {
  return log.child({}, { redact: [] });
}

const MAX_LOGGED_PATH = 512;

/** A request path as the access log holds it: at most 512 characters (a client chooses its length). */
export function loggedPath(path: string): string {
  return path.length > MAX_LOGGED_PATH ? `${path.slice(0, MAX_LOGGED_PATH)}…` : path;
}
