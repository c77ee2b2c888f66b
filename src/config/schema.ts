import { bool, int, intOrAuto, listen, oneOf, path, size, stringList, text, url } from './kinds.ts';
import { secret } from './secrets.ts';
import { defaultsOf, type Setting, type ValuesOf } from './setting.ts';
import { parseUpstreamList, TAG_PATTERN_SYNTAX, type UpstreamConfig } from './upstream-config.ts';

/**
 * Gantry's settings, each declared once: key, kind and bounds, default, env var, flag and help.
 * The Config type, DEFAULT_CONFIG, validation, env and flag parsing, the CLI's options and the
 * README's configuration table (`npm run docs:config`) are all derived from this table.
 * Precedence (highest first): command-line flag, environment variable, config file, default.
 */

export const DOCKER_HUB_HOST = 'docker.io';
export const DOCKER_HUB_URL = 'https://registry-1.docker.io';
export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const;

const upstreams: { default: UpstreamConfig[] } & Setting<UpstreamConfig[]> = {
  type: 'list of upstreams (below)',
  help: 'the registries mirrored',
  default: [{ host: DOCKER_HUB_HOST, url: DOCKER_HUB_URL }],
  docDefault: 'Docker Hub',
  parse: parseUpstreamList,
};

export const SETTINGS = {
  listen: listen({ default: { host: '0.0.0.0', port: 5000 }, env: 'GANTRY_LISTEN', flag: 'listen', help: 'host:port to listen on; `:port` means all interfaces', docDefault: '`0.0.0.0:5000`' }),
  workers: intOrAuto({
    default: 'auto',
    min: 0,
    max: 64,
    env: 'GANTRY_WORKERS',
    flag: 'workers',
    help: 'processes that share the listen port and send cache hits themselves, asking the main process for everything else; `auto` = one per CPU core (at most 8) on 2 or more cores, else 0; 0 = the main process serves alone; in a container, set it to the CPU limit',
    docDefault: '`auto`',
  }),
  cacheDir: path({ default: './data', env: 'GANTRY_CACHE_DIR', flag: 'cache-dir', metavar: 'DIR', help: 'blobs, LevelDB index, temp files' }),
  maxCacheBytes: size({ default: 0, env: 'GANTRY_MAX_CACHE_BYTES', flag: 'max-cache-bytes', help: 'high watermark: `50GiB`, `500MB` or bytes', docDefault: '`0` (unbounded)' }),
  cacheLowWatermarkPercent: int({ default: 90, min: 1, max: 100, help: 'eviction frees space down to this share of the budget' }),
  maxUnusedAgeSeconds: int({ default: 0, min: 0, help: 'evict blobs unread for this long', docDefault: '`0` (off)' }),
  tagTtlSeconds: int({ default: 300, min: 0, env: 'GANTRY_TAG_TTL_SECONDS', flag: 'tag-ttl-seconds', help: 'trust a tag this long before a revalidating HEAD' }),
  immutableTags: stringList({
    default: [],
    pattern: TAG_PATTERN_SYNTAX,
    expected: 'a tag pattern (tag characters and `*`)',
    help: 'tag patterns (`*` = any characters, e.g. `v*.*.*`, `sha256-*.sig`) whose digest never changes: once cached they are never revalidated upstream',
    docDefault: 'none',
  }),
  logLevel: oneOf(LOG_LEVELS, { default: 'info', env: 'GANTRY_LOG_LEVEL', flag: 'log-level', metavar: 'LEVEL', help: 'pino level' }),
  cacheWriteTimeoutMs: int({ default: 5 * 60_000, min: 1, help: 'longest one blob fill may run, so a stalled upstream cannot pin a fill forever' }),
  upstreamHeadersTimeoutMs: int({ default: 30_000, min: 1, help: 'how long to wait for upstream response headers' }),
  upstreamBodyTimeoutMs: int({ default: 60_000, min: 1, help: 'longest silence in an upstream body before the fill is abandoned' }),
  clientIdleTimeoutMs: int({
    default: 5 * 60_000,
    min: 0,
    help: 'close a client connection with no I/O for this long (a client that stopped reading); 0 = never; must exceed `upstreamBodyTimeoutMs`',
  }),
  maxManifestBytes: size({ default: 4 * 2 ** 20, min: 1024, help: 'largest manifest or tags answer accepted' }),
  maxConcurrentFills: int({ default: 64, min: 1, help: 'blob downloads at once; later misses wait up to `fillQueueTimeoutMs`, then get a 503' }),
  fillQueueTimeoutMs: int({ default: 30_000, min: 0, help: 'how long a miss waits for a download slot' }),
  fillResumeAttempts: int({ default: 3, min: 0, help: '`Range` resumes of a cut download before giving up' }),
  diskErrorBackoffSeconds: int({ default: 30, min: 1, help: 'after a cache write error (disk full), stream misses uncached this long, then try again' }),
  upstreamMaxBytesPerSecond: size({
    default: 0,
    help: 'blob bytes per second taken from all upstreams together (`20MB`), so a shared uplink is never taken whole; client fills go before prefetch; 0 = no limit',
    docDefault: '`0` (no limit)',
  }),
  adminRemote: bool({ default: false, help: 'serve `/admin/*` (cache verification) to non-loopback clients too' }),
  adminToken: secret('adminToken', { help: '`/admin/*` then also needs `Authorization: Bearer <token>`, which also shows restricted repositories in `/v2/_catalog`; never logged', docDefault: 'none' }),
  tls: {
    section: {
      certFile: path({ env: 'GANTRY_TLS_CERT_FILE', help: 'PEM certificate chain: Gantry serves HTTPS on `listen` (reloaded without a restart when the file changes); unset = plain HTTP', docDefault: 'none' }),
      keyFile: path({ env: 'GANTRY_TLS_KEY_FILE', help: "PEM private key of `tls.certFile`; never logged", docDefault: 'none' }),
    },
  },
  upstreams,
  defaultUpstream: text({ default: DOCKER_HUB_HOST, lowercase: true, expected: 'a host name', typeName: 'upstream host', help: 'upstream for requests that name none', docDefault: 'first upstream' }),
  auth: {
    section: {
      htpasswdFile: path({ help: 'htpasswd file (bcrypt entries) of users allowed to use Gantry; unset = no client authentication', docDefault: 'none' }),
      tokenTtlSeconds: int({ default: 300, min: 0, help: "lifetime of the tokens Gantry's own `/token` endpoint issues" }),
      accessCheckTtlSeconds: int({ default: 60, min: 0, help: "memory of an upstream's yes/no for a credential and repository" }),
      failClosed: bool({ default: true, help: 'refuse restricted content when the upstream cannot be asked (false: serve it)' }),
      challengePing: bool({ default: true, help: "`GET /v2/` without credentials gets Gantry's challenge, so clients that only log in after a ping send credentials" }),
      realm: text({ typeName: 'URL', help: "public URL of Gantry's token endpoint, behind a TLS-terminating proxy", docDefault: 'from the request' }),
    },
  },
  breaker: {
    section: {
      failureThreshold: int({
        default: 5,
        min: 1,
        help: 'consecutive failures (network errors, timeouts, 502/503/504; not 500, which a healthy registry answers to some requests) that mark an upstream down',
      }),
      cooldownSeconds: int({ default: 30, min: 0, help: 'after this long one client request is let through as a trial' }),
      probeIntervalSeconds: int({
        default: 1,
        min: 0,
        help: 'while an upstream is marked down, probe its `GET /v2/` this often and close the circuit on the first answer below 500; 0 = no probes',
      }),
      trialTimeoutSeconds: int({ default: 10, min: 1, help: 'deadline of the half-open trial and of each probe, so neither can wedge the breaker' }),
    },
  },
  cluster: {
    section: {
      nodeId: text({ env: 'GANTRY_NODE_ID', pattern: /^[A-Za-z0-9._-]{1,64}$/, expected: '1-64 letters, digits, `.`, `_` or `-`', help: "this node's name among the nodes sharing a cache (logs, metrics)", docDefault: 'the hostname' }),
      advertiseUrl: url({ env: 'GANTRY_ADVERTISE_URL', help: 'how the other nodes reach this one', docDefault: 'none' }),
      peerToken: secret('peerToken', { env: 'GANTRY_PEER_TOKEN', help: 'secret shared by the nodes (16 characters or more), for their requests to each other; never logged', docDefault: 'none' }),
      redis: {
        section: {
          url: secret('url', { env: 'GANTRY_REDIS_URL', help: '`redis://` or `rediss://` URL of the Redis (or Valkey) the nodes coordinate through; its password is never logged', docDefault: 'none (no coordination)' }),
        },
      },
    },
  },
  storage: {
    section: {
      s3: {
        section: {
          endpoint: url({ env: 'GANTRY_S3_ENDPOINT', help: 'S3-compatible endpoint (MinIO, Ceph RGW, Swift s3api)', docDefault: 'AWS' }),
          region: text({ env: 'GANTRY_S3_REGION', help: 'the bucket\'s region', docDefault: '`us-east-1` with an endpoint, else the SDK\'s (`AWS_REGION`)' }),
          bucket: text({ env: 'GANTRY_S3_BUCKET', pattern: /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/, expected: 'an S3 bucket name (3-63 lowercase letters, digits, `.` or `-`)', help: 'bucket of the shared tier, which must exist; unset = no shared tier', docDefault: 'none' }),
          prefix: text({ default: '', allowEmpty: true, env: 'GANTRY_S3_PREFIX', pattern: /^(?:[A-Za-z0-9!_.*'()-]+\/)*$/, expected: 'empty, or path segments each ending in `/` (`cache/`)', help: "where Gantry's objects go in the bucket", docDefault: 'empty (the bucket\'s root)' }),
          forcePathStyle: bool({ default: false, env: 'GANTRY_S3_FORCE_PATH_STYLE', help: '`http://host/bucket/key` addressing, which most S3-compatible servers need' }),
          maxBytes: size({ default: 0, env: 'GANTRY_S3_MAX_BYTES', help: "the shared tier's budget: past it, the least recently used objects are deleted down to `cacheLowWatermarkPercent` of it (recency kept in Redis; without Redis, oldest first)", docDefault: '`0` (unbounded)' }),
          sweepSeconds: int({ default: 30, min: 1, help: 'how often one node (the one holding the sweep lease) checks the budget' }),
        },
      },
    },
  },
  proxy: {
    section: {
      httpProxy: text({ envFallback: ['HTTP_PROXY', 'http_proxy'], help: 'proxy for http:// upstreams' }),
      httpsProxy: text({ envFallback: ['HTTPS_PROXY', 'https_proxy'], help: 'proxy for https:// upstreams' }),
      noProxy: text({ envFallback: ['NO_PROXY', 'no_proxy'], help: 'hosts reached directly' }),
    },
  },
} as const;

export type Config = ValuesOf<typeof SETTINGS>;
export type AuthConfig = Config['auth'];
export type BreakerConfig = Config['breaker'];
export type ProxyConfig = Config['proxy'];
export type ClusterConfig = Config['cluster'];
export type S3Config = Config['storage']['s3'];
export type TlsConfig = Config['tls'];
export type { UpstreamConfig };

function deepFreeze<T>(v: T): Readonly<T> {
  if (typeof v === 'object' && v !== null) for (const x of Object.values(v)) deepFreeze(x);
  return Object.freeze(v);
}

/** The defaults, frozen all the way down: parsing clones them, never mutates them. */
export const DEFAULT_CONFIG: Readonly<Config> = deepFreeze(defaultsOf(SETTINGS));
