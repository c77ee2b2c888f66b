import { Option } from 'commander';
import { pino } from 'pino';
import { createCache } from '../gantry.ts';
import { createLogger } from '../observability/logger.ts';
import { createMetrics } from '../observability/metrics.ts';
import type { CliCommand } from './command.ts';

/**
 * `gantry verify [--remove]`: re-hash the cache offline (Gantry stopped) and print a JSON report;
 * exit 1 if anything is bad, unless --remove dropped it.
 */
export const verify: CliCommand = {
  summary: 're-hash every cached object offline; exit 1 if any is bad',
  options: () => [new Option('--remove', 'drop bad objects from the index and the disk')],
  async run(config, options, io) {
    const remove = options['remove'] === true;
    // stdout carries the JSON report; logs go to stderr.
    const log = createLogger('warn', pino.destination(2));
    // An offline check never evicts: no budget, no age limit.
    const cache = createCache({ ...config, maxCacheBytes: 0, maxUnusedAgeSeconds: 0 }, { metrics: createMetrics(), log });
    const reconciled = await cache.init();
    const report = await cache.verifyAll({ remove });
    await cache.close();
    io.out(`${JSON.stringify({ reconciled, ...report }, null, 2)}\n`);
    return report.bad.length > 0 && !remove ? 1 : 0;
  },
};
