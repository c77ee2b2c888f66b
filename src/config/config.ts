/**
 * Gantry's configuration: the type, the embedded defaults, and a pure
 * validator that reports every problem at once. Precedence (highest first):
 * command-line flag, environment variable, config file, default.
 */

export type UpstreamConfig = {
  /** The registry name clients use, e.g. `docker.io`, `ghcr.io`, `registry.internal:5000`. */
  host: string;
  /** Where Gantry actually sends requests. */
  url: string;
  username?: string;
  password?: string;
  /** Overrides the global tag TTL for this upstream. */
  tagTtlSeconds?: number;
};

export type Config = {
  listen: { host: string; port: number };
  cacheDir: string;
  /** 0 means unbounded. */
  maxCacheBytes: number;
  tagTtlSeconds: number;
  logLevel: 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal' | 'silent';
  /** Upper bound on one background blob fill, so a stalled upstream cannot pin a fill forever. */
  cacheWriteTimeoutMs: number;
  /** How long to wait for upstream response headers. */
  upstreamHeadersTimeoutMs: number;
  /** How long an upstream body may stay silent before the fill is abandoned. */
  upstreamBodyTimeoutMs: number;
  maxManifestBytes: number;
  upstreams: UpstreamConfig[];
  defaultUpstream: string;
};

export const DOCKER_HUB_HOST = 'docker.io';
export const DOCKER_HUB_URL = 'https://registry-1.docker.io';

export const DEFAULT_CONFIG: Readonly<Config> = Object.freeze({
  listen: { host: '0.0.0.0', port: 5000 },
  cacheDir: './data',
  maxCacheBytes: 0,
  tagTtlSeconds: 300,
  logLevel: 'info',
  cacheWriteTimeoutMs: 5 * 60_000,
  upstreamHeadersTimeoutMs: 30_000,
  upstreamBodyTimeoutMs: 60_000,
  maxManifestBytes: 4 * 1024 * 1024,
  upstreams: [{ host: DOCKER_HUB_HOST, url: DOCKER_HUB_URL }],
  defaultUpstream: DOCKER_HUB_HOST,
});

export class ConfigError extends Error {
  readonly problems: readonly string[];
  constructor(problems: string[]) {
    super(`invalid configuration:\n  - ${problems.join('\n  - ')}`);
    this.name = 'ConfigError';
    this.problems = problems;
  }
}

/** Overrides from env vars and flags, already in config vocabulary; all optional strings. */
export type ConfigOverrides = {
  listen?: string | undefined;
  cacheDir?: string | undefined;
  maxCacheBytes?: string | undefined;
  tagTtlSeconds?: string | undefined;
  logLevel?: string | undefined;
  upstreamUrl?: string | undefined;
  upstreamUsername?: string | undefined;
  upstreamPassword?: string | undefined;
};

const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const;
const SIZE_UNITS: Record<string, number> = {
  '': 1, b: 1, k: 1e3, kb: 1e3, m: 1e6, mb: 1e6, g: 1e9, gb: 1e9, t: 1e12, tb: 1e12,
  kib: 2 ** 10, mib: 2 ** 20, gib: 2 ** 30, tib: 2 ** 40,
};

/** Parse `10GiB`, `500MB`, `1234` into bytes; undefined when malformed. */
export function parseSize(v: unknown): number | undefined {
  if (typeof v === 'number') return Number.isSafeInteger(v) && v >= 0 ? v : undefined;
  if (typeof v !== 'string') return undefined;
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(v);
  const unit = SIZE_UNITS[(m?.[2] ?? '').toLowerCase()];
  if (!m || unit === undefined) return undefined;
  return Math.floor(Number(m[1]) * unit);
}

/** Parse `host:port`, `:port` or `[v6]:port`. */
export function parseListen(v: unknown): { host: string; port: number } | undefined {
  if (typeof v !== 'string') return undefined;
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d{1,5})$/.exec(v.trim());
  if (!m) return undefined;
  const port = Number(m[3]);
  if (port > 65535) return undefined;
  return { host: m[1] ?? (m[2] || '0.0.0.0'), port };
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function intField(v: unknown, name: string, problems: string[], min = 0): number | undefined {
  if (v === undefined) return undefined;
  const n = typeof v === 'string' && /^\d+$/.test(v.trim()) ? Number(v) : v;
  if (typeof n !== 'number' || !Number.isSafeInteger(n) || n < min) {
    problems.push(`${name}: expected an integer >= ${min}, got ${JSON.stringify(v)}`);
    return undefined;
  }
  return n;
}

function urlField(v: unknown, name: string, problems: string[]): string | undefined {
  if (typeof v !== 'string') {
    problems.push(`${name}: expected an http(s) URL`);
    return undefined;
  }
  try {
    const u = new URL(v);
    if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new Error('scheme');
    if (u.username || u.password) {
      problems.push(`${name}: credentials in the URL are not allowed; use username/password`);
      return undefined;
    }
    return u.origin + u.pathname.replace(/\/+$/, '');
  } catch {
    problems.push(`${name}: expected an http(s) URL, got ${JSON.stringify(v)}`);
    return undefined;
  }
}

function parseUpstream(raw: unknown, i: number, problems: string[]): UpstreamConfig | undefined {
  const where = `upstreams[${i}]`;
  if (!isRecord(raw)) {
    problems.push(`${where}: expected a mapping`);
    return undefined;
  }
  const known = new Set(['host', 'url', 'username', 'password', 'tagTtlSeconds']);
  for (const k of Object.keys(raw)) if (!known.has(k)) problems.push(`${where}.${k}: unknown key`);
  const host = raw['host'];
  if (typeof host !== 'string' || !/^[a-z0-9.-]+(?::\d{1,5})?$/i.test(host)) {
    problems.push(`${where}.host: expected a registry host such as docker.io or registry.internal:5000`);
  }
  const url = urlField(raw['url'], `${where}.url`, problems);
  const up: UpstreamConfig = { host: String(host).toLowerCase(), url: url ?? '' };
  for (const k of ['username', 'password'] as const) {
    const v = raw[k];
    if (v === undefined) continue;
    if (typeof v !== 'string') problems.push(`${where}.${k}: expected a string`);
    else up[k] = v;
  }
  const ttl = intField(raw['tagTtlSeconds'], `${where}.tagTtlSeconds`, problems);
  if (ttl !== undefined) up.tagTtlSeconds = ttl;
  return up;
}

/**
 * Validate a raw config document (parsed YAML, or undefined for none) plus
 * overrides into a Config. Never mutates DEFAULT_CONFIG.
 */
export function parseConfig(file: unknown, overrides: ConfigOverrides = {}): Config {
  const problems: string[] = [];
  const raw: Record<string, unknown> = file === undefined || file === null ? {} : isRecord(file) ? file : {};
  if (file !== undefined && file !== null && !isRecord(file)) problems.push('config file: expected a mapping at the top level');

  const known = new Set([
    'listen', 'cacheDir', 'maxCacheBytes', 'tagTtlSeconds', 'logLevel', 'cacheWriteTimeoutMs',
    'upstreamHeadersTimeoutMs', 'upstreamBodyTimeoutMs', 'maxManifestBytes', 'upstreams', 'defaultUpstream',
  ]);
  for (const k of Object.keys(raw)) if (!known.has(k)) problems.push(`${k}: unknown key`);

  const cfg: Config = structuredClone({ ...DEFAULT_CONFIG, listen: { ...DEFAULT_CONFIG.listen } }) as Config;

  const listenRaw = overrides.listen ?? raw['listen'];
  if (listenRaw !== undefined) {
    const l = parseListen(listenRaw);
    if (l) cfg.listen = l;
    else problems.push(`listen: expected host:port, got ${JSON.stringify(listenRaw)}`);
  }

  const cacheDir = overrides.cacheDir ?? raw['cacheDir'];
  if (cacheDir !== undefined) {
    if (typeof cacheDir === 'string' && cacheDir.length > 0) cfg.cacheDir = cacheDir;
    else problems.push('cacheDir: expected a non-empty path');
  }

  const maxRaw = overrides.maxCacheBytes ?? raw['maxCacheBytes'];
  if (maxRaw !== undefined) {
    const n = parseSize(maxRaw);
    if (n === undefined) problems.push(`maxCacheBytes: expected a size such as 50GiB or 1000000, got ${JSON.stringify(maxRaw)}`);
    else cfg.maxCacheBytes = n;
  }

  const setInt = (key: 'tagTtlSeconds' | 'cacheWriteTimeoutMs' | 'upstreamHeadersTimeoutMs' | 'upstreamBodyTimeoutMs', v: unknown, min = 0): void => {
    const n = intField(v, key, problems, min);
    if (n !== undefined) cfg[key] = n;
  };
  setInt('tagTtlSeconds', overrides.tagTtlSeconds ?? raw['tagTtlSeconds']);
  setInt('cacheWriteTimeoutMs', raw['cacheWriteTimeoutMs'], 1);
  setInt('upstreamHeadersTimeoutMs', raw['upstreamHeadersTimeoutMs'], 1);
  setInt('upstreamBodyTimeoutMs', raw['upstreamBodyTimeoutMs'], 1);
  if (raw['maxManifestBytes'] !== undefined) {
    const n = parseSize(raw['maxManifestBytes']);
    if (n === undefined || n < 1024) problems.push('maxManifestBytes: expected a size of at least 1KiB');
    else cfg.maxManifestBytes = n;
  }

  const level = overrides.logLevel ?? raw['logLevel'];
  if (level !== undefined) {
    if ((LOG_LEVELS as readonly unknown[]).includes(level)) cfg.logLevel = level as Config['logLevel'];
    else problems.push(`logLevel: expected one of ${LOG_LEVELS.join(', ')}`);
  }

  if (raw['upstreams'] !== undefined) {
    if (!Array.isArray(raw['upstreams']) || raw['upstreams'].length === 0) {
      problems.push('upstreams: expected a non-empty list');
    } else {
      cfg.upstreams = raw['upstreams']
        .map((u, i) => parseUpstream(u, i, problems))
        .filter((u): u is UpstreamConfig => u !== undefined);
      const seen = new Set<string>();
      for (const u of cfg.upstreams) {
        if (seen.has(u.host)) problems.push(`upstreams: host ${u.host} is listed twice`);
        seen.add(u.host);
      }
    }
  }
  if (raw['defaultUpstream'] !== undefined) {
    if (typeof raw['defaultUpstream'] === 'string') cfg.defaultUpstream = raw['defaultUpstream'].toLowerCase();
    else problems.push('defaultUpstream: expected a host name');
  } else if (raw['upstreams'] !== undefined && cfg.upstreams[0]) {
    cfg.defaultUpstream = cfg.upstreams[0].host;
  }

  const def = cfg.upstreams.find((u) => u.host === cfg.defaultUpstream);
  if (!def) {
    problems.push(`defaultUpstream: ${cfg.defaultUpstream} is not one of the configured upstreams`);
  } else {
    // The GANTRY_UPSTREAM_* variables describe the default upstream.
    if (overrides.upstreamUrl !== undefined) {
      const url = urlField(overrides.upstreamUrl, 'upstream url (GANTRY_UPSTREAM_URL / --upstream-url)', problems);
      if (url) def.url = url;
    }
    if (overrides.upstreamUsername !== undefined) def.username = overrides.upstreamUsername;
    if (overrides.upstreamPassword !== undefined) def.password = overrides.upstreamPassword;
  }
  for (const u of cfg.upstreams) {
    if ((u.username === undefined) !== (u.password === undefined)) {
      problems.push(`upstream ${u.host}: username and password must be set together`);
    }
  }

  if (problems.length > 0) throw new ConfigError(problems);
  return cfg;
}

/** Read the GANTRY_* variables into overrides. */
export function overridesFromEnv(env: NodeJS.ProcessEnv): ConfigOverrides {
  return {
    listen: env['GANTRY_LISTEN'],
    cacheDir: env['GANTRY_CACHE_DIR'],
    maxCacheBytes: env['GANTRY_MAX_CACHE_BYTES'],
    tagTtlSeconds: env['GANTRY_TAG_TTL_SECONDS'],
    logLevel: env['GANTRY_LOG_LEVEL'],
    upstreamUrl: env['GANTRY_UPSTREAM_URL'],
    upstreamUsername: env['GANTRY_UPSTREAM_USERNAME'],
    upstreamPassword: env['GANTRY_UPSTREAM_PASSWORD'],
  };
}

/** Flags win over env: merge field by field, ignoring undefined. */
export function mergeOverrides(...layers: ConfigOverrides[]): ConfigOverrides {
  const out: ConfigOverrides = {};
  for (const layer of layers) {
    for (const [k, v] of Object.entries(layer) as Array<[keyof ConfigOverrides, string | undefined]>) {
      if (v !== undefined && out[k] === undefined) out[k] = v;
    }
  }
  return out;
}
