import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseConfig, type Config } from '../../src/config/config.ts';
import { startGantry, type Gantry } from '../../src/gantry.ts';

export type Mirror = Gantry & { cacheDir: string; config: Config; restart(): Promise<Mirror>; destroy(): Promise<void> };

/**
 * Start Gantry in-process on 127.0.0.1:0 with a fresh cache directory (or the
 * given one) and one upstream. `raw` is a config document as the YAML would hold it.
 * It serves alone (workers: 0) unless `raw` or GANTRY_TEST_WORKERS says otherwise: a suite
 * run again with serving processes sets that (see private-access-workers.test.ts).
 */
export async function startMirror(raw: Record<string, unknown>, cacheDir?: string): Promise<Mirror> {
  const dir = cacheDir ?? (await mkdtemp(join(tmpdir(), 'gantry-test-')));
  const config = parseConfig({ listen: '127.0.0.1:0', logLevel: process.env['GANTRY_TEST_LOG'] ?? 'silent', workers: Number(process.env['GANTRY_TEST_WORKERS'] ?? 0), ...raw, cacheDir: dir });
  const g = await startGantry(config);
  const mirror: Mirror = {
    ...g,
    cacheDir: dir,
    config,
    async restart() {
      await g.close();
      return startMirror(raw, dir);
    },
    async destroy() {
      await g.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
  return mirror;
}

/** Read one metric sample's value from Gantry's /metrics text (0 if absent). */
export async function metricValue(url: string, name: string, labels: Record<string, string> = {}): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  let total = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    if (Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`))) total += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return total;
}
