#!/usr/bin/env node
import { join, resolve } from 'node:path';
import { pino } from 'pino';
import { ConfigError } from './config/config.ts';
import { loadConfig } from './config/load-config.ts';
import { startGantry } from './gantry.ts';
import { createLogger } from './observability/logger.ts';
import { createMetrics } from './observability/metrics.ts';
import { FsBlobStore } from './store/blob-store.ts';
import { ContentCache } from './store/content-cache.ts';
import { LevelIndexStore } from './store/index-store.ts';

/**
 * Entry point.
 *   gantry [options]                 serve (SIGINT/SIGTERM shut down cleanly)
 *   gantry verify [--remove] [opts]  re-hash the cache offline; exit 1 if anything is bad
 */
async function main(argv: string[]): Promise<void> {
  // Every blob read and write goes through libuv's thread pool; its default of 4 threads makes
  // 50 clients tailing one download queue behind each other. Must be set before first use.
  process.env['UV_THREADPOOL_SIZE'] ??= '16';
  const verify = argv[0] === 'verify';
  const remove = verify && argv.includes('--remove');
  const args = verify ? argv.slice(1).filter((a) => a !== '--remove') : argv;
  let config;
  try {
    config = await loadConfig(args, process.env);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
  if (verify) {
    const root = resolve(config.cacheDir);
    // stdout carries the JSON report; logs go to stderr.
    const log = createLogger('warn', pino.destination(2));
    const cache = new ContentCache({ files: new FsBlobStore(root), index: new LevelIndexStore(join(root, 'index')), maxBytes: 0, metrics: createMetrics(), log });
    const reconciled = await cache.init();
    const report = await cache.verifyAll({ remove });
    await cache.close();
    process.stdout.write(`${JSON.stringify({ reconciled, ...report }, null, 2)}\n`);
    process.exit(report.bad.length > 0 && !remove ? 1 : 0);
  }
  const gantry = await startGantry(config);
  const stop = (signal: string): void => {
    gantry.log.info({ signal }, 'shutting down');
    const force = setTimeout(() => process.exit(1), 10_000);
    force.unref();
    gantry.close().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.once('SIGINT', () => stop('SIGINT'));
  process.once('SIGTERM', () => stop('SIGTERM'));
}

await main(process.argv.slice(2));
