import { join, resolve } from 'node:path';
import { Level } from 'level';
import { pino } from 'pino';
import type { Config } from '../config/config.ts';
import { createCache } from '../gantry.ts';
import { createLogger } from '../observability/logger.ts';
import { createMetrics } from '../observability/metrics.ts';
import type { ContentCache } from '../store/content-cache.ts';

/**
 * How the commands that work on the cache (import, export, pins, unpin) reach it: directly when
 * Gantry is stopped, through the running instance's admin API when LevelDB's lock says one serves it.
 */

/**
 * Whether a running Gantry holds the cache's index. Asked before createCache, whose init() clears
 * tmp/ and would cut the running instance's downloads short. A cache that does not exist yet, or
 * that cannot be opened for another reason, is not locked: opening it directly then reports why.
 */
export async function cacheLocked(config: Pick<Config, 'cacheDir'>): Promise<boolean> {
  const db = new Level(join(resolve(config.cacheDir), 'index'), { createIfMissing: false });
  try {
    await db.open();
    await db.close();
    return false;
  } catch (err) {
    return hasCode(err, 'LEVEL_LOCKED');
  }
}

/** level wraps the lock error of its store in `cause`, so the whole chain is searched. */
function hasCode(err: unknown, code: string): boolean {
  for (let e: unknown = err; typeof e === 'object' && e !== null; e = (e as { cause?: unknown }).cause) {
    if ((e as { code?: unknown }).code === code) return true;
  }
  return false;
}

/**
 * The running Gantry's base URL: `--url` as given (without a trailing slash), else the config's
 * listen address, with a wildcard host replaced by loopback, which the admin API serves.
 */
export function serverUrl(config: Pick<Config, 'listen'>, options: Readonly<Record<string, unknown>>): string {
  if (typeof options['url'] === 'string') return options['url'].replace(/\/+$/, '');
  const host = config.listen.host === '0.0.0.0' || config.listen.host === '' ? '127.0.0.1' : config.listen.host === '::' ? '[::1]' : config.listen.host;
  return `http://${host.includes(':') && !host.startsWith('[') ? `[${host}]` : host}:${config.listen.port}`;
}

/**
 * Run `work` on the cache of a stopped Gantry, closing it after; warnings go to stderr. With
 * `evict: false` the cache opens without a budget or an age limit, so a command that only reads
 * never evicts; with `evict: true` it enforces the config's, as the server would.
 */
export async function withStoppedCache<T>(config: Config, opts: { evict: boolean }, work: (cache: ContentCache) => Promise<T>): Promise<T> {
  const log = createLogger('warn', pino.destination(2));
  const limits = opts.evict ? {} : { maxCacheBytes: 0, maxUnusedAgeSeconds: 0 };
  const cache = createCache({ ...config, ...limits }, { metrics: createMetrics(), log });
  await cache.init();
  try {
    return await work(cache);
  } finally {
    await cache.close();
  }
}
