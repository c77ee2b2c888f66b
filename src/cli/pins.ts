import { Option } from 'commander';
import { listPins, type PinView } from '../transfer/pins.ts';
import { listPinsThrough } from '../transfer/pins-remote.ts';
import { cacheLocked, serverUrl, withStoppedCache } from './cache-access.ts';
import type { CliCommand } from './command.ts';

/**
 * `gantry pins [--json] [--url URL]`: the pinned images, with how much of each is cached. Reads
 * a stopped cache directly (without evicting anything), or asks the running Gantry that holds it
 * (`GET /admin/pins`).
 */
export const pinsCommand: CliCommand = {
  summary: 'list the pinned images (kept out of eviction)',
  options: () => [
    new Option('--json', 'print the pins as a JSON list'),
    new Option('--url <URL>', 'the running Gantry to ask when the cache is locked (default: from --listen)'),
  ],
  async run(config, options, io) {
    let pins: PinView[];
    try {
      pins = (await cacheLocked(config))
        ? await listPinsThrough(serverUrl(config, options), config.adminToken)
        : await withStoppedCache(config, { evict: false }, (cache) => Promise.resolve(listPins(cache)));
    } catch (err) {
      io.err(`gantry pins: ${(err as Error).message}\n`);
      return 1;
    }
    io.out(options['json'] === true ? `${JSON.stringify(pins, null, 2)}\n` : formatPinTable(pins));
    return 0;
  },
};

const HEADER = ['REF', 'DIGESTS CACHED', 'BYTES', 'PINNED AT'] as const;

/** One row a pin, columns padded to their widest cell; a line saying so when there are none. */
export function formatPinTable(pins: readonly PinView[]): string {
  if (pins.length === 0) return 'no pinned images\n';
  const rows = [[...HEADER], ...pins.map((p) => [p.ref, `${p.cachedDigests}/${p.digests}`, String(p.bytes), p.pinnedAt])];
  const widths = HEADER.map((_, i) => Math.max(...rows.map((r) => r[i]?.length ?? 0)));
  return rows.map((r) => r.map((cell, i) => (i === r.length - 1 ? cell : cell.padEnd(widths[i] ?? 0))).join('  ')).join('\n') + '\n';
}
