import { readFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { parse as parseYaml } from 'yaml';
import { ConfigError, mergeOverrides, overridesFromEnv, parseConfig, type Config, type ConfigOverrides } from './config.ts';

export const USAGE = `usage: gantry [--config FILE] [--listen HOST:PORT] [--cache-dir DIR] [--upstream-url URL]
              [--tag-ttl-seconds N] [--max-cache-bytes SIZE] [--log-level LEVEL]
Without --config, Gantry mirrors Docker Hub on 0.0.0.0:5000 with its cache in ./data.`;

/** Parse argv + env + optional YAML file into a validated Config. */
export async function loadConfig(argv: string[], env: NodeJS.ProcessEnv): Promise<Config> {
  let values: Record<string, string | boolean | undefined>;
  try {
    ({ values } = parseArgs({
      args: argv,
      strict: true,
      options: {
        config: { type: 'string', short: 'c' },
        listen: { type: 'string' },
        'cache-dir': { type: 'string' },
        'upstream-url': { type: 'string' },
        'tag-ttl-seconds': { type: 'string' },
        'max-cache-bytes': { type: 'string' },
        'log-level': { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    }));
  } catch (err) {
    throw new ConfigError([(err as Error).message]);
  }
  if (values['help']) throw new ConfigError([USAGE]);
  const str = (k: string): string | undefined => (typeof values[k] === 'string' ? values[k] : undefined);
  const flags: ConfigOverrides = {
    listen: str('listen'),
    cacheDir: str('cache-dir'),
    upstreamUrl: str('upstream-url'),
    tagTtlSeconds: str('tag-ttl-seconds'),
    maxCacheBytes: str('max-cache-bytes'),
    logLevel: str('log-level'),
  };
  const configPath = str('config') ?? env['GANTRY_CONFIG'];
  let file: unknown;
  if (configPath) {
    let text: string;
    try {
      text = await readFile(configPath, 'utf8');
    } catch (err) {
      throw new ConfigError([`config file ${configPath}: ${(err as Error).message}`]);
    }
    try {
      file = parseYaml(text);
    } catch (err) {
      throw new ConfigError([`config file ${configPath}: ${(err as Error).message}`]);
    }
  }
  return parseConfig(file, mergeOverrides(flags, overridesFromEnv(env)));
}
