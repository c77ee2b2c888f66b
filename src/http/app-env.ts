import type { HttpBindings } from '@hono/node-server';
import type { CacheResult } from '../oci/headers.ts';
import type { Logger } from '../observability/logger.ts';
import type { Kind } from '../observability/metrics.ts';

/** Per-request facts the handlers fill in and the access log / metrics read at the end. */
export type RequestStats = {
  kind: Kind | undefined;
  result: CacheResult | undefined;
  bytes: number;
  /** Answered with an accel plan: the serving process that sends the bytes logs and counts it. */
  delegated?: boolean;
};

export type AppEnv = {
  Bindings: HttpBindings;
  /** log: the request's logger (bound to its id), made on first use: most requests never log. */
  Variables: { reqId: string; log: () => Logger; stats: RequestStats };
};
