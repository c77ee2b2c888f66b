import { readFile } from 'node:fs/promises';
import { parse as parseYaml } from 'yaml';
import { ConfigError, mergeOverrides, overridesFromEnv, parseConfig, type Config, type ConfigOverrides } from './config.ts';

/** Where a config comes from besides the environment: a YAML file and command-line flags. */
export type ConfigSource = {
  /** The YAML file (`--config`); GANTRY_CONFIG names it otherwise. */
  configPath?: string | undefined;
  /** Flag values, already keyed like the settings they override. */
  flags?: ConfigOverrides;
};

/** Read the file, then validate file + env + flags into a Config (flag > env > file > default). */
export async function loadConfig(source: ConfigSource, env: NodeJS.ProcessEnv): Promise<Config> {
  const configPath = source.configPath ?? env['GANTRY_CONFIG'];
  const file = configPath ? await readConfigFile(configPath) : undefined;
  return parseConfig(file, mergeOverrides(source.flags ?? {}, overridesFromEnv(env)));
}

async function readConfigFile(configPath: string): Promise<unknown> {
  let text: string;
  try {
    text = await readFile(configPath, 'utf8');
  } catch (err) {
    throw new ConfigError([`config file ${configPath}: ${(err as Error).message}`]);
  }
  try {
    return parseYaml(text);
  } catch (err) {
    throw new ConfigError([`config file ${configPath}: ${(err as Error).message}`]);
  }
}
