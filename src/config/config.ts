import { readFileSync } from 'node:fs';
import { DEFAULT_CONFIG, SETTINGS, type Config } from './schema.ts';
import { isRecord, parseFields, walkSettings, type SecretSource, type Setting } from './setting.ts';
import { applyUpstreamOverrides, UPSTREAM_FIELDS, upstreamOverrides } from './upstream-config.ts';

/**
 * Validating a config document plus overrides into a Config, reporting every problem at once.
 * What each setting is lives in the table (schema.ts); here are only the rules across settings.
 */

export { DEFAULT_CONFIG, DOCKER_HUB_HOST, DOCKER_HUB_URL, type AuthConfig, type BreakerConfig, type ClusterConfig, type Config, type ProxyConfig, type S3Config, type UpstreamConfig } from './schema.ts';
export { parseListen, parseSize } from './kinds.ts';
export type { SecretSource } from './setting.ts';

export class ConfigError extends Error {
  readonly problems: readonly string[];
  constructor(problems: string[]) {
    super(`invalid configuration:\n  - ${problems.join('\n  - ')}`);
    this.name = 'ConfigError';
    this.problems = problems;
  }
}

type Overridable<F> = { [K in keyof F]: F[K] extends { env: string } | { flag: string } ? K & string : never }[keyof F];

/**
 * Overrides from env vars and flags, in config vocabulary: a setting's key (`listen`), or
 * `upstream<Key>` (`upstreamUrl`) for the default upstream's entry keys. All optional strings.
 */
export type ConfigOverrides = { readonly [K in Overridable<typeof SETTINGS> | `upstream${Capitalize<Overridable<typeof UPSTREAM_FIELDS>>}`]?: string | undefined };

/** Every overridable setting: [override key, setting], top-level ones and the default upstream's. */
export function overridableSettings(): Array<[overrideKey: string, setting: Setting<unknown>]> {
  const top = [...walkSettings(SETTINGS)].filter(([, s]) => s.env !== undefined || s.flag !== undefined);
  // An entry key's env var or flag sets that key of the default upstream only: the help says so.
  const ofDefault = upstreamOverrides().map(([key, name, s]): [string, Setting<unknown>] => [key, { ...s, help: `the default upstream's \`${name}\`: ${s.help}` }]);
  return [...top, ...ofDefault];
}

/**
 * Validate a raw config document (parsed YAML, or undefined for none) plus
 * overrides into a Config. Never mutates DEFAULT_CONFIG.
 */
export function parseConfig(
  file: unknown,
  overrides: ConfigOverrides = {},
  secrets: SecretSource = { env: process.env, readFile: (p) => readFileSync(p, 'utf8') },
): Config {
  const problems: string[] = [];
  const raw: Record<string, unknown> = file === undefined || file === null ? {} : isRecord(file) ? file : {};
  if (file !== undefined && file !== null && !isRecord(file)) problems.push('config file: expected a mapping at the top level');
  const cfg = parseFields(SETTINGS, raw, '', overrides, { problems, secrets });
  const ctx = { problems, secrets, record: raw };

  if (cfg.clientIdleTimeoutMs > 0 && cfg.clientIdleTimeoutMs <= cfg.upstreamBodyTimeoutMs) {
    problems.push(`clientIdleTimeoutMs: must be 0 or more than upstreamBodyTimeoutMs (${cfg.upstreamBodyTimeoutMs}), or clients following a slow download are cut first`);
  }
  // Without defaultUpstream, the first configured upstream is the default.
  if (raw['defaultUpstream'] === undefined && raw['upstreams'] !== undefined && cfg.upstreams[0]) cfg.defaultUpstream = cfg.upstreams[0].host;
  const def = cfg.upstreams.find((u) => u.host === cfg.defaultUpstream);
  if (!def) problems.push(`defaultUpstream: ${cfg.defaultUpstream} is not one of the configured upstreams`);
  applyUpstreamOverrides(cfg.upstreams, def, overrides, ctx);
  checkCluster(cfg, problems);
  if ((cfg.tls.certFile === undefined) !== (cfg.tls.keyFile === undefined)) problems.push(`tls.${cfg.tls.certFile === undefined ? 'certFile' : 'keyFile'}: required with tls.${cfg.tls.certFile === undefined ? 'keyFile' : 'certFile'} (HTTPS needs both)`);

  if (problems.length > 0) throw new ConfigError(problems);
  return cfg;
}

/** A shared cache needs its parts together: a bucket for the S3 tier, and a peer secret and an address for the nodes. */
function checkCluster(cfg: Config, problems: string[]): void {
  const s3 = cfg.storage.s3;
  if (s3.bucket === undefined && (s3.endpoint !== undefined || s3.region !== undefined || s3.prefix !== '')) {
    problems.push('storage.s3.bucket: required when storage.s3 is set (the shared tier\'s bucket)');
  }
  const { cluster } = cfg;
  if (cluster.peerToken !== undefined && cluster.peerToken.length < 16) problems.push('cluster.peerToken: must be 16 characters or more');
  const redis = cluster.redis.url;
  if (redis === undefined) return;
  if (!/^rediss?:\/\/[^\s]+$/.test(redis)) problems.push('cluster.redis.url: expected a redis:// or rediss:// URL');
  if (cluster.peerToken === undefined) problems.push('cluster.peerToken: required with cluster.redis (or peerTokenEnv / peerTokenFile, or GANTRY_PEER_TOKEN)');
  if (cluster.advertiseUrl === undefined) problems.push('cluster.advertiseUrl: required with cluster.redis (how the other nodes reach this one)');
}

/** Read the environment variables of the settings table into overrides. */
export function overridesFromEnv(env: NodeJS.ProcessEnv): ConfigOverrides {
  const out: Record<string, string | undefined> = {};
  for (const [key, s] of overridableSettings()) {
    if (s.env === undefined) continue;
    // An empty variable (GANTRY_LISTEN= in a compose file) means unset, not an invalid value.
    const v = env[s.env];
    out[key] = v === '' ? undefined : v;
  }
  return out;
}

/** Flags win over env: merge field by field, ignoring undefined. */
export function mergeOverrides(...layers: ConfigOverrides[]): ConfigOverrides {
  const out: Record<string, string | undefined> = {};
  for (const layer of layers) {
    for (const [k, v] of Object.entries(layer)) {
      if (v !== undefined && out[k] === undefined) out[k] = v;
    }
  }
  return out;
}

