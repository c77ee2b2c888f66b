import { readFileSync } from 'node:fs';

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
  /** Path alias: `/v2/<prefix>/<repo>/...` selects this upstream (hosts with a port can't be a path component). */
  prefix?: string;
  /** Host header values (virtual hosts) that select this upstream. */
  virtualHosts?: string[];
  username?: string;
  password?: string;
  /** A static bearer token Gantry sends as-is (instead of username/password). */
  token?: string;
  /** Overrides the global tag TTL for this upstream. */
  tagTtlSeconds?: number;
  /** Repository patterns (`*` within a path component, `**` across) allowed / denied; deny wins. */
  allow?: string[];
  deny?: string[];
  /** Keep serving cached content when the upstream answers 404 (e.g. a deleted tag). Off by default. */
  serveCachedOn404?: boolean;
  /** Extra hosts allowed as bearer-token realms besides the upstream's own registrable domain. */
  realmHosts?: string[];
};

export type AuthConfig = {
  /** htpasswd file (bcrypt entries) of users allowed to use Gantry; unset = no client authentication. */
  htpasswdFile?: string;
  /** Lifetime of the tokens Gantry's own /token endpoint issues. */
  tokenTtlSeconds: number;
  /** How long a yes/no from the upstream about a credential's access to a repository is remembered. */
  accessCheckTtlSeconds: number;
  /** If the upstream cannot be asked whether a credential may see restricted content: refuse (true) or serve. */
  failClosed: boolean;
  /** Answer `GET /v2/` with a challenge to Gantry's own token endpoint, so clients that only log in after a ping can send credentials. */
  challengePing: boolean;
  /** Public URL of Gantry's token endpoint, when clients reach Gantry through a TLS-terminating proxy. Default: derived from the request. */
  realm?: string;
};

export type BreakerConfig = {
  failureThreshold: number;
  cooldownSeconds: number;
  /** While an upstream is marked down, probe its `GET /v2/` this often (0: no probes, only the cooldown trial). */
  probeIntervalSeconds: number;
  /** Deadline of the half-open trial request and of each probe. */
  trialTimeoutSeconds: number;
};
export type ProxyConfig = { httpProxy?: string; httpsProxy?: string; noProxy?: string };

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
  /**
   * A client connection with no I/O for this long is closed (0 = never), so a client that stops
   * reading a blob cannot hold its file or fill forever. Keep it above upstreamBodyTimeoutMs:
   * a follower of a stalled download sees no bytes until that gives up.
   */
  clientIdleTimeoutMs: number;
  maxManifestBytes: number;
  /** Eviction starts above maxCacheBytes and frees space down to this percentage of it. */
  cacheLowWatermarkPercent: number;
  /** Evict blobs not read for this long (0 = keep while there is room). */
  maxUnusedAgeSeconds: number;
  /** At most this many blob downloads at once; further misses wait up to fillQueueTimeoutMs, then 503. */
  maxConcurrentFills: number;
  fillQueueTimeoutMs: number;
  /** How many times a cut blob download is resumed with a Range request before giving up. */
  fillResumeAttempts: number;
  /** After a cache write error (disk full), stream misses without caching for this long, then try again. */
  diskErrorBackoffSeconds: number;
  /** Serve /admin/* (cache verification) to non-loopback clients too. */
  adminRemote: boolean;
  upstreams: UpstreamConfig[];
  defaultUpstream: string;
  auth: AuthConfig;
  breaker: BreakerConfig;
  /** Outbound proxy; defaults to HTTPS_PROXY / HTTP_PROXY / NO_PROXY from the environment. */
  proxy: ProxyConfig;
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
  clientIdleTimeoutMs: 5 * 60_000,
  maxManifestBytes: 4 * 1024 * 1024,
  cacheLowWatermarkPercent: 90,
  maxUnusedAgeSeconds: 0,
  maxConcurrentFills: 64,
  fillQueueTimeoutMs: 30_000,
  fillResumeAttempts: 3,
  diskErrorBackoffSeconds: 30,
  adminRemote: false,
  upstreams: [{ host: DOCKER_HUB_HOST, url: DOCKER_HUB_URL }],
  defaultUpstream: DOCKER_HUB_HOST,
  auth: { tokenTtlSeconds: 300, accessCheckTtlSeconds: 60, failClosed: true, challengePing: true },
  breaker: { failureThreshold: 5, cooldownSeconds: 30, probeIntervalSeconds: 1, trialTimeoutSeconds: 10 },
  proxy: {},
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

/** Reads a secret file; injectable so parseConfig stays testable. */
export type SecretSource = { env: NodeJS.ProcessEnv; readFile: (path: string) => string };

function stringList(v: unknown, where: string, problems: string[]): string[] | undefined {
  if (v === undefined) return undefined;
  if (!Array.isArray(v) || !v.every((x) => typeof x === 'string' && x.length > 0)) {
    problems.push(`${where}: expected a list of strings`);
    return undefined;
  }
  return v as string[];
}

/** `password`, `passwordEnv: NAME` or `passwordFile: PATH` (likewise token): at most one of them. */
function secretField(raw: Record<string, unknown>, key: 'password' | 'token', where: string, problems: string[], secrets: SecretSource): string | undefined {
  const forms = [key, `${key}Env`, `${key}File`].filter((k) => raw[k] !== undefined);
  if (forms.length > 1) problems.push(`${where}: set only one of ${forms.join(', ')}`);
  const inline = raw[key];
  const envName = raw[`${key}Env`];
  const file = raw[`${key}File`];
  if (inline !== undefined) {
    if (typeof inline === 'string') return inline;
    problems.push(`${where}.${key}: expected a string`);
  } else if (envName !== undefined) {
    if (typeof envName !== 'string') problems.push(`${where}.${key}Env: expected a variable name`);
    else if (secrets.env[envName] === undefined) problems.push(`${where}.${key}Env: environment variable ${envName} is not set`);
    else return secrets.env[envName];
  } else if (file !== undefined) {
    if (typeof file !== 'string') problems.push(`${where}.${key}File: expected a path`);
    else {
      try {
        return secrets.readFile(file).replace(/\r?\n$/, '');
      } catch (err) {
        problems.push(`${where}.${key}File: cannot read ${file}: ${(err as Error).message}`);
      }
    }
  }
  return undefined;
}

const UPSTREAM_KEYS = new Set([
  'host', 'url', 'prefix', 'virtualHosts', 'username', 'password', 'passwordEnv', 'passwordFile', 'token', 'tokenEnv',
  'tokenFile', 'tagTtlSeconds', 'allow', 'deny', 'serveCachedOn404', 'realmHosts',
]);

function parseUpstream(raw: unknown, i: number, problems: string[], secrets: SecretSource): UpstreamConfig | undefined {
  const where = `upstreams[${i}]`;
  if (!isRecord(raw)) {
    problems.push(`${where}: expected a mapping`);
    return undefined;
  }
  for (const k of Object.keys(raw)) if (!UPSTREAM_KEYS.has(k)) problems.push(`${where}.${k}: unknown key`);
  const host = raw['host'];
  if (typeof host !== 'string' || !/^[a-z0-9]([a-z0-9.-]*[a-z0-9])?(?::\d{1,5})?$/i.test(host)) {
    problems.push(`${where}.host: expected a registry host such as docker.io or registry.internal:5000`);
  }
  const url = urlField(raw['url'], `${where}.url`, problems);
  const up: UpstreamConfig = { host: String(host).toLowerCase(), url: url ?? '' };
  const prefix = raw['prefix'];
  if (prefix !== undefined) {
    if (typeof prefix === 'string' && /^[a-z0-9]+(?:[._-][a-z0-9]+)*$/.test(prefix)) up.prefix = prefix;
    else problems.push(`${where}.prefix: expected one lowercase path component such as "internal"`);
  }
  const vhosts = stringList(raw['virtualHosts'], `${where}.virtualHosts`, problems);
  if (vhosts) up.virtualHosts = vhosts.map((h) => h.toLowerCase());
  const username = raw['username'];
  if (username !== undefined) {
    if (typeof username === 'string') up.username = username;
    else problems.push(`${where}.username: expected a string`);
  }
  const password = secretField(raw, 'password', where, problems, secrets);
  if (password !== undefined) up.password = password;
  const token = secretField(raw, 'token', where, problems, secrets);
  if (token !== undefined) up.token = token;
  if (up.token !== undefined && up.username !== undefined) problems.push(`${where}: use either a token or username/password`);
  const ttl = intField(raw['tagTtlSeconds'], `${where}.tagTtlSeconds`, problems);
  if (ttl !== undefined) up.tagTtlSeconds = ttl;
  for (const key of ['allow', 'deny'] as const) {
    const list = stringList(raw[key], `${where}.${key}`, problems);
    if (list) up[key] = list;
  }
  const realmHosts = stringList(raw['realmHosts'], `${where}.realmHosts`, problems);
  if (realmHosts) up.realmHosts = realmHosts.map((h) => h.toLowerCase());
  if (raw['serveCachedOn404'] !== undefined) {
    if (typeof raw['serveCachedOn404'] === 'boolean') up.serveCachedOn404 = raw['serveCachedOn404'];
    else problems.push(`${where}.serveCachedOn404: expected true or false`);
  }
  return up;
}

function parseSection<T extends object>(
  raw: unknown,
  name: string,
  defaults: T,
  fields: Record<string, 'int' | 'bool' | 'string'>,
  problems: string[],
): T {
  const out = { ...defaults } as Record<string, unknown>;
  if (raw === undefined) return out as T;
  if (!isRecord(raw)) {
    problems.push(`${name}: expected a mapping`);
    return out as T;
  }
  for (const [k, v] of Object.entries(raw)) {
    const kind = fields[k];
    if (!kind) problems.push(`${name}.${k}: unknown key`);
    else if (kind === 'int') {
      const n = intField(v, `${name}.${k}`, problems);
      if (n !== undefined) out[k] = n;
    } else if (kind === 'bool') {
      if (typeof v === 'boolean') out[k] = v;
      else problems.push(`${name}.${k}: expected true or false`);
    } else if (typeof v === 'string' && v.length > 0) out[k] = v;
    else problems.push(`${name}.${k}: expected a string`);
  }
  return out as T;
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

  const known = new Set([
    'listen', 'cacheDir', 'maxCacheBytes', 'tagTtlSeconds', 'logLevel', 'cacheWriteTimeoutMs',
    'upstreamHeadersTimeoutMs', 'upstreamBodyTimeoutMs', 'clientIdleTimeoutMs', 'maxManifestBytes', 'upstreams', 'defaultUpstream',
    'auth', 'breaker', 'proxy', 'cacheLowWatermarkPercent', 'maxUnusedAgeSeconds', 'maxConcurrentFills',
    'fillQueueTimeoutMs', 'fillResumeAttempts', 'diskErrorBackoffSeconds', 'adminRemote',
  ]);
  for (const k of Object.keys(raw)) if (!known.has(k)) problems.push(`${k}: unknown key`);

  const cfg: Config = structuredClone(DEFAULT_CONFIG) as Config;

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

  const setInt = (key: 'tagTtlSeconds' | 'cacheWriteTimeoutMs' | 'upstreamHeadersTimeoutMs' | 'upstreamBodyTimeoutMs' | 'clientIdleTimeoutMs', v: unknown, min = 0): void => {
    const n = intField(v, key, problems, min);
    if (n !== undefined) cfg[key] = n;
  };
  type IntKey = 'cacheLowWatermarkPercent' | 'maxUnusedAgeSeconds' | 'maxConcurrentFills' | 'fillQueueTimeoutMs' | 'fillResumeAttempts' | 'diskErrorBackoffSeconds';
  const limits: Array<[IntKey, number]> = [
    ['cacheLowWatermarkPercent', 1], ['maxUnusedAgeSeconds', 0], ['maxConcurrentFills', 1], ['fillQueueTimeoutMs', 0],
    ['fillResumeAttempts', 0], ['diskErrorBackoffSeconds', 1],
  ];
  for (const [key, min] of limits) {
    const n = intField(raw[key], key, problems, min);
    if (n !== undefined) cfg[key] = n;
  }
  if (cfg.cacheLowWatermarkPercent > 100) problems.push('cacheLowWatermarkPercent: expected at most 100');
  if (raw['adminRemote'] !== undefined) {
    if (typeof raw['adminRemote'] === 'boolean') cfg.adminRemote = raw['adminRemote'];
    else problems.push('adminRemote: expected true or false');
  }
  setInt('tagTtlSeconds', overrides.tagTtlSeconds ?? raw['tagTtlSeconds']);
  setInt('cacheWriteTimeoutMs', raw['cacheWriteTimeoutMs'], 1);
  setInt('upstreamHeadersTimeoutMs', raw['upstreamHeadersTimeoutMs'], 1);
  setInt('upstreamBodyTimeoutMs', raw['upstreamBodyTimeoutMs'], 1);
  setInt('clientIdleTimeoutMs', raw['clientIdleTimeoutMs'], 0);
  if (cfg.clientIdleTimeoutMs > 0 && cfg.clientIdleTimeoutMs <= cfg.upstreamBodyTimeoutMs) {
    problems.push(`clientIdleTimeoutMs: must be 0 or more than upstreamBodyTimeoutMs (${cfg.upstreamBodyTimeoutMs}), or clients following a slow download are cut first`);
  }
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
        .map((u, i) => parseUpstream(u, i, problems, secrets))
        .filter((u): u is UpstreamConfig => u !== undefined);
      // Hosts, prefixes and virtual hosts all select an upstream: each may name only one.
      const seen = new Map<string, string>();
      for (const u of cfg.upstreams) {
        for (const name of [u.host, ...(u.prefix ? [u.prefix] : []), ...(u.virtualHosts ?? []).map((v) => `vhost:${v}`)]) {
          const other = seen.get(name);
          if (other !== undefined) problems.push(`upstreams: ${name.replace('vhost:', '')} selects both ${other} and ${u.host}`);
          seen.set(name, u.host);
        }
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
  cfg.auth = parseSection(raw['auth'], 'auth', DEFAULT_CONFIG.auth, {
    htpasswdFile: 'string', tokenTtlSeconds: 'int', accessCheckTtlSeconds: 'int', failClosed: 'bool', challengePing: 'bool', realm: 'string',
  }, problems);
  cfg.breaker = parseSection(raw['breaker'], 'breaker', DEFAULT_CONFIG.breaker, {
    failureThreshold: 'int', cooldownSeconds: 'int', probeIntervalSeconds: 'int', trialTimeoutSeconds: 'int',
  }, problems);
  if (cfg.breaker.failureThreshold < 1) problems.push('breaker.failureThreshold: expected at least 1');
  if (cfg.breaker.trialTimeoutSeconds < 1) problems.push('breaker.trialTimeoutSeconds: expected at least 1');
  const envProxy: ProxyConfig = {};
  const pick = (...names: string[]): string | undefined => names.map((n) => secrets.env[n]).find((v) => v !== undefined && v !== '');
  const httpProxy = pick('HTTP_PROXY', 'http_proxy');
  const httpsProxy = pick('HTTPS_PROXY', 'https_proxy');
  const noProxy = pick('NO_PROXY', 'no_proxy');
  if (httpProxy) envProxy.httpProxy = httpProxy;
  if (httpsProxy) envProxy.httpsProxy = httpsProxy;
  if (noProxy) envProxy.noProxy = noProxy;
  cfg.proxy = parseSection(raw['proxy'], 'proxy', envProxy, { httpProxy: 'string', httpsProxy: 'string', noProxy: 'string' }, problems);

  for (const u of cfg.upstreams) {
    if ((u.username === undefined) !== (u.password === undefined)) {
      problems.push(`upstream ${u.host}: username and password must be set together`);
    }
  }

  if (problems.length > 0) throw new ConfigError(problems);
  return cfg;
}

/** Read the GANTRY_* variables into overrides. */
export function overridesFromEnv(raw: NodeJS.ProcessEnv): ConfigOverrides {
  // An empty variable (GANTRY_LISTEN= in a compose file) means unset, not an invalid value.
  const env = Object.fromEntries(Object.entries(raw).filter(([, v]) => v !== '')) as NodeJS.ProcessEnv;
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
