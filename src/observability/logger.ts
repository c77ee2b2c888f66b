import { pino, type Logger, type DestinationStream } from 'pino';

export type { Logger };

/**
 * JSON logs. Credentials never reach a log line: request/response headers
 * are not logged wholesale, and the usual secret-bearing paths are redacted
 * in case a future call site logs an object that carries one.
 */
export function createLogger(level: string, destination?: DestinationStream): Logger {
  return pino(
    {
      level,
      base: { svc: 'gantry' },
      redact: {
        paths: [
          'authorization', '*.authorization', '*.*.authorization',
          'password', '*.password', '*.*.password',
          'token', '*.token', 'headers.cookie', 'adminToken', '*.adminToken',
        ],
        censor: '[redacted]',
      },
    },
    destination,
  );
}
