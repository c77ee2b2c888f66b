import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import {
  ConfigError,
  DEFAULT_CONFIG,
  DOCKER_HUB_HOST,
  DOCKER_HUB_URL,
  mergeOverrides,
  overridesFromEnv,
  parseConfig,
  parseListen,
  parseSize,
  type Config,
  type SecretSource,
} from '../../../src/config/config.ts';
import { SETTINGS } from '../../../src/config/schema.ts';
import { walkSettings } from '../../../src/config/setting.ts';
import { UPSTREAM_FIELDS } from '../../../src/config/upstream-config.ts';
import { loadConfig } from '../../../src/config/load-config.ts';
import { configSourceOf } from '../../../src/cli/config-options.ts';
import { EXIT_USAGE, parseCommandLine } from '../../../src/cli/main.ts';
import type { Io } from '../../../src/cli/command.ts';

/** Runs fn, asserts it throws a ConfigError, and returns its problems. */
function problemsOf(fn: () => unknown): readonly string[] {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof ConfigError, `expected a ConfigError, got ${String(err)}`);
    return err.problems;
  }
  assert.fail('expected a ConfigError');
}

async function problemsOfAsync(fn: () => Promise<unknown>): Promise<readonly string[]> {
  try {
    await fn();
  } catch (err) {
    assert.ok(err instanceof ConfigError, `expected a ConfigError, got ${String(err)}`);
    return err.problems;
  }
  assert.fail('expected a ConfigError');
}

/** An Io that keeps what was written. */
function captureIo(): Io & { stdout(): string; stderr(): string } {
  let out = '';
  let err = '';
  return { out: (s) => void (out += s), err: (s) => void (err += s), stdout: () => out, stderr: () => err };
}

/** Config as `gantry [serve] <argv>` loads it: the real command line, then file + env + flags. */
async function loadFromArgv(argv: string[], env: NodeJS.ProcessEnv): Promise<Config> {
  const io = captureIo();
  const parsed = await parseCommandLine(argv, io);
  if ('exitCode' in parsed) assert.fail(`exit ${parsed.exitCode}: ${io.stderr()}`);
  return loadConfig(configSourceOf(parsed.options), env);
}

function hasProblem(problems: readonly string[], re: RegExp): boolean {
  return problems.some((p) => re.test(p));
}

const PRISTINE_DEFAULTS: Config = structuredClone(DEFAULT_CONFIG) as Config;

describe('parseConfig defaults', () => {
  test('no file and no overrides gives the Docker Hub mirror on 0.0.0.0:5000 with ./data', () => {
    const cfg = parseConfig(undefined);
    assert.deepEqual(cfg.listen, { host: '0.0.0.0', port: 5000 });
    assert.equal(cfg.cacheDir, './data');
    assert.equal(cfg.tagTtlSeconds, 300);
    assert.equal(cfg.maxCacheBytes, 0);
    assert.equal(cfg.logLevel, 'info');
    assert.equal(cfg.defaultUpstream, 'docker.io');
    assert.deepEqual(cfg.upstreams, [{ host: 'docker.io', url: 'https://registry-1.docker.io' }]);
    assert.equal(DOCKER_HUB_HOST, 'docker.io');
    assert.equal(DOCKER_HUB_URL, 'https://registry-1.docker.io');
  });

  test('a null document (empty YAML file) is the same as no file', () => {
    assert.deepEqual(parseConfig(null), parseConfig(undefined));
  });

  test('an empty mapping is the same as no file', () => {
    assert.deepEqual(parseConfig({}), parseConfig(undefined));
  });

  test('the result is a fresh object, not DEFAULT_CONFIG or its nested parts', () => {
    const cfg = parseConfig(undefined);
    assert.notEqual(cfg, DEFAULT_CONFIG);
    assert.notEqual(cfg.listen, DEFAULT_CONFIG.listen);
    assert.notEqual(cfg.upstreams, DEFAULT_CONFIG.upstreams);
    assert.notEqual(cfg.upstreams[0], DEFAULT_CONFIG.upstreams[0]);
  });
});

describe('parseConfig with a file', () => {
  test('reads every top-level setting', () => {
    const cfg = parseConfig({
      listen: '127.0.0.1:6000',
      cacheDir: '/var/cache/gantry',
      maxCacheBytes: '50GiB',
      tagTtlSeconds: 60,
      logLevel: 'debug',
      cacheWriteTimeoutMs: 1000,
      upstreamHeadersTimeoutMs: 2000,
      upstreamBodyTimeoutMs: 3000,
      maxManifestBytes: '8MiB',
    });
    assert.deepEqual(cfg.listen, { host: '127.0.0.1', port: 6000 });
    assert.equal(cfg.cacheDir, '/var/cache/gantry');
    assert.equal(cfg.maxCacheBytes, 50 * 2 ** 30);
    assert.equal(cfg.tagTtlSeconds, 60);
    assert.equal(cfg.logLevel, 'debug');
    assert.equal(cfg.cacheWriteTimeoutMs, 1000);
    assert.equal(cfg.upstreamHeadersTimeoutMs, 2000);
    assert.equal(cfg.upstreamBodyTimeoutMs, 3000);
    assert.equal(cfg.maxManifestBytes, 8 * 2 ** 20);
  });

  test('several upstreams: the first is the default unless defaultUpstream says otherwise', () => {
    const upstreams = [
      { host: 'ghcr.io', url: 'https://ghcr.io/' },
      { host: 'Registry.Internal:5000', url: 'http://10.0.0.5:5000', username: 'u', password: 'p', tagTtlSeconds: 10 },
    ];
    const cfg = parseConfig({ upstreams });
    assert.equal(cfg.defaultUpstream, 'ghcr.io');
    assert.deepEqual(cfg.upstreams, [
      { host: 'ghcr.io', url: 'https://ghcr.io' },
      { host: 'registry.internal:5000', url: 'http://10.0.0.5:5000', username: 'u', password: 'p', tagTtlSeconds: 10 },
    ]);
    assert.equal(parseConfig({ upstreams, defaultUpstream: 'registry.internal:5000' }).defaultUpstream, 'registry.internal:5000');
  });

  test('a defaultUpstream that is not configured is a problem', () => {
    const problems = problemsOf(() => parseConfig({ defaultUpstream: 'quay.io' }));
    assert.ok(hasProblem(problems, /defaultUpstream/), problems.join('\n'));
  });

  test('an upstream URL with embedded credentials is rejected', () => {
    const problems = problemsOf(() => parseConfig({ upstreams: [{ host: 'docker.io', url: 'https://user:secret@registry-1.docker.io' }] }));
    assert.ok(hasProblem(problems, /upstreams\[0\]\.url: credentials in the URL are not allowed/), problems.join('\n'));
    assert.ok(!problems.some((p) => p.includes('secret')), 'the password must not be echoed');
  });

  test('an upstream URL that is not http(s) is rejected', () => {
    const problems = problemsOf(() => parseConfig({ upstreams: [{ host: 'docker.io', url: 'ftp://registry-1.docker.io' }] }));
    assert.ok(hasProblem(problems, /upstreams\[0\]\.url/), problems.join('\n'));
  });

  test('duplicate upstream hosts are a problem', () => {
    const problems = problemsOf(() =>
      parseConfig({ upstreams: [{ host: 'docker.io', url: 'https://a.example' }, { host: 'DOCKER.IO', url: 'https://b.example' }] }),
    );
    assert.ok(hasProblem(problems, /^upstreams: .*docker\.io/), problems.join('\n'));
  });

  test('an upstream with a username but no password is a problem', () => {
    const problems = problemsOf(() => parseConfig({ upstreams: [{ host: 'docker.io', url: DOCKER_HUB_URL, username: 'u' }] }));
    assert.ok(hasProblem(problems, /username and password must be set together/), problems.join('\n'));
  });

  test('unknown top-level and upstream keys are reported', () => {
    const problems = problemsOf(() => parseConfig({ listenAddr: ':5000', upstreams: [{ host: 'docker.io', url: DOCKER_HUB_URL, passwd: 'x' }] }));
    assert.ok(hasProblem(problems, /^listenAddr: unknown key$/), problems.join('\n'));
    assert.ok(hasProblem(problems, /^upstreams\[0\]\.passwd: unknown key$/), problems.join('\n'));
  });

  test('several problems are reported at once', () => {
    const problems = problemsOf(() =>
      parseConfig({
        listen: 'nonsense',
        cacheDir: '',
        maxCacheBytes: 'lots',
        tagTtlSeconds: -1,
        logLevel: 'loud',
        extra: true,
      }),
    );
    for (const re of [/^listen:/, /^cacheDir:/, /^maxCacheBytes:/, /^tagTtlSeconds:/, /^logLevel:/, /^extra: unknown key/]) {
      assert.ok(hasProblem(problems, re), `missing ${re}: ${problems.join('\n')}`);
    }
    assert.ok(problems.length >= 6);
  });

  test('the ConfigError message lists every problem', () => {
    try {
      parseConfig({ listen: 'nonsense', logLevel: 'loud' });
      assert.fail('expected a ConfigError');
    } catch (err) {
      assert.ok(err instanceof ConfigError);
      for (const p of err.problems) assert.ok(err.message.includes(p));
    }
  });

  test('a top-level document that is not a mapping is a problem', () => {
    assert.ok(hasProblem(problemsOf(() => parseConfig(['a'])), /top level/));
    assert.ok(hasProblem(problemsOf(() => parseConfig('listen: 1')), /top level/));
  });

  test('an empty upstreams list is a problem', () => {
    assert.ok(hasProblem(problemsOf(() => parseConfig({ upstreams: [] })), /^upstreams: expected a non-empty list/));
  });

  test('maxManifestBytes below 1KiB is a problem', () => {
    assert.ok(hasProblem(problemsOf(() => parseConfig({ maxManifestBytes: 10 })), /^maxManifestBytes/));
  });

  test('timeouts must be at least 1', () => {
    const problems = problemsOf(() => parseConfig({ cacheWriteTimeoutMs: 0, upstreamHeadersTimeoutMs: 0, upstreamBodyTimeoutMs: 0 }));
    assert.equal(problems.length, 3, problems.join('\n'));
  });

  test('clientIdleTimeoutMs: 5 minutes by default, 0 turns it off, and it must outlast upstreamBodyTimeoutMs', () => {
    assert.equal(parseConfig(undefined).clientIdleTimeoutMs, 300_000);
    assert.equal(parseConfig({ clientIdleTimeoutMs: 0 }).clientIdleTimeoutMs, 0);
    assert.equal(parseConfig({ clientIdleTimeoutMs: 61_000 }).clientIdleTimeoutMs, 61_000);
    assert.ok(hasProblem(problemsOf(() => parseConfig({ clientIdleTimeoutMs: 60_000 })), /^clientIdleTimeoutMs: must be 0 or more than upstreamBodyTimeoutMs \(60000\)/));
    assert.ok(hasProblem(problemsOf(() => parseConfig({ clientIdleTimeoutMs: 5_000, upstreamBodyTimeoutMs: 10_000 })), /^clientIdleTimeoutMs/));
    assert.ok(hasProblem(problemsOf(() => parseConfig({ clientIdleTimeoutMs: -1 })), /^clientIdleTimeoutMs/));
  });

  test('workers: auto or an integer from 0 to 64, from a file, the environment or a flag', () => {
    assert.equal(parseConfig({}).workers, 'auto');
    assert.equal(parseConfig({ workers: 0 }).workers, 0);
    assert.equal(parseConfig({ workers: '4' }).workers, 4);
    assert.equal(parseConfig({ workers: 'auto' }).workers, 'auto');
    for (const bad of [-1, 65, 1.5, 'many', '']) assert.ok(hasProblem(problemsOf(() => parseConfig({ workers: bad })), /^workers: expected auto or an integer from 0 to 64/), String(bad));
  });

  test('integer settings given as strings of digits are accepted', () => {
    assert.equal(parseConfig({ tagTtlSeconds: '45' }).tagTtlSeconds, 45);
  });

  test('non-integer numbers are rejected', () => {
    assert.ok(hasProblem(problemsOf(() => parseConfig({ tagTtlSeconds: 1.5 })), /^tagTtlSeconds/));
    assert.ok(hasProblem(problemsOf(() => parseConfig({ tagTtlSeconds: '1.5' })), /^tagTtlSeconds/));
  });
});

describe('overridesFromEnv', () => {
  test('reads every GANTRY_* variable into its override', () => {
    assert.deepEqual(
      overridesFromEnv({
        GANTRY_LISTEN: ':7000',
        GANTRY_WORKERS: '3',
        GANTRY_CACHE_DIR: '/c',
        GANTRY_MAX_CACHE_BYTES: '10GiB',
        GANTRY_TAG_TTL_SECONDS: '30',
        GANTRY_LOG_LEVEL: 'warn',
        GANTRY_UPSTREAM_URL: 'https://mirror.example',
        GANTRY_UPSTREAM_USERNAME: 'bob',
        GANTRY_UPSTREAM_PASSWORD: 'hunter2',
        GANTRY_TLS_CERT_FILE: '/etc/gantry/tls.crt',
        GANTRY_TLS_KEY_FILE: '/etc/gantry/tls.key',
        UNRELATED: 'x',
      }),
      {
        listen: ':7000',
        workers: '3',
        cacheDir: '/c',
        maxCacheBytes: '10GiB',
        tagTtlSeconds: '30',
        logLevel: 'warn',
        'cluster.nodeId': undefined,
        'cluster.advertiseUrl': undefined,
        'cluster.peerToken': undefined,
        'cluster.redis.url': undefined,
        'storage.s3.endpoint': undefined,
        'storage.s3.region': undefined,
        'storage.s3.bucket': undefined,
        'storage.s3.prefix': undefined,
        'storage.s3.forcePathStyle': undefined,
        'storage.s3.maxBytes': undefined,
        'tls.certFile': '/etc/gantry/tls.crt',
        'tls.keyFile': '/etc/gantry/tls.key',
        upstreamUrl: 'https://mirror.example',
        upstreamUsername: 'bob',
        upstreamPassword: 'hunter2',
      },
    );
  });

  test('an empty environment gives no overrides', () => {
    const o = overridesFromEnv({});
    assert.ok(Object.values(o).every((v) => v === undefined));
    assert.deepEqual(parseConfig(undefined, o), parseConfig(undefined));
  });
});

describe('parseConfig with environment overrides', () => {
  const env = (vars: NodeJS.ProcessEnv): Config => parseConfig(undefined, overridesFromEnv(vars));

  test('GANTRY_LISTEN sets host and port; :port means all interfaces', () => {
    assert.deepEqual(env({ GANTRY_LISTEN: '127.0.0.1:8080' }).listen, { host: '127.0.0.1', port: 8080 });
    assert.deepEqual(env({ GANTRY_LISTEN: ':8080' }).listen, { host: '0.0.0.0', port: 8080 });
    assert.deepEqual(env({ GANTRY_LISTEN: '[::1]:8080' }).listen, { host: '::1', port: 8080 });
  });

  test('GANTRY_CACHE_DIR sets the cache directory', () => {
    assert.equal(env({ GANTRY_CACHE_DIR: '/srv/cache' }).cacheDir, '/srv/cache');
  });

  test('GANTRY_UPSTREAM_URL replaces the default upstream URL, trailing slash trimmed', () => {
    const cfg = env({ GANTRY_UPSTREAM_URL: 'https://mirror.example.com/' });
    assert.deepEqual(cfg.upstreams, [{ host: 'docker.io', url: 'https://mirror.example.com' }]);
  });

  test('GANTRY_UPSTREAM_URL with embedded credentials is rejected', () => {
    const problems = problemsOf(() => env({ GANTRY_UPSTREAM_URL: 'https://u:p@mirror.example.com' }));
    assert.ok(hasProblem(problems, /credentials in the URL are not allowed/), problems.join('\n'));
  });

  test('GANTRY_UPSTREAM_USERNAME and GANTRY_UPSTREAM_PASSWORD set the default upstream credentials', () => {
    const cfg = env({ GANTRY_UPSTREAM_USERNAME: 'bob', GANTRY_UPSTREAM_PASSWORD: 'hunter2' });
    assert.equal(cfg.upstreams[0]?.username, 'bob');
    assert.equal(cfg.upstreams[0]?.password, 'hunter2');
  });

  test('a username without a password is a problem', () => {
    assert.ok(hasProblem(problemsOf(() => env({ GANTRY_UPSTREAM_USERNAME: 'bob' })), /username and password must be set together/));
  });

  test('the upstream variables apply to the configured default upstream only', () => {
    const cfg = parseConfig(
      {
        upstreams: [
          { host: 'ghcr.io', url: 'https://ghcr.io' },
          { host: 'docker.io', url: DOCKER_HUB_URL },
        ],
        defaultUpstream: 'docker.io',
      },
      overridesFromEnv({ GANTRY_UPSTREAM_URL: 'https://hub-mirror.example', GANTRY_UPSTREAM_USERNAME: 'u', GANTRY_UPSTREAM_PASSWORD: 'p' }),
    );
    assert.deepEqual(cfg.upstreams, [
      { host: 'ghcr.io', url: 'https://ghcr.io' },
      { host: 'docker.io', url: 'https://hub-mirror.example', username: 'u', password: 'p' },
    ]);
  });

  test('GANTRY_TAG_TTL_SECONDS sets the tag TTL; non-numbers are a problem', () => {
    assert.equal(env({ GANTRY_TAG_TTL_SECONDS: '42' }).tagTtlSeconds, 42);
    assert.equal(env({ GANTRY_TAG_TTL_SECONDS: '0' }).tagTtlSeconds, 0);
    assert.ok(hasProblem(problemsOf(() => env({ GANTRY_TAG_TTL_SECONDS: 'soon' })), /^tagTtlSeconds/));
    assert.ok(hasProblem(problemsOf(() => env({ GANTRY_TAG_TTL_SECONDS: '-5' })), /^tagTtlSeconds/));
  });

  test('GANTRY_MAX_CACHE_BYTES understands binary and decimal units', () => {
    assert.equal(env({ GANTRY_MAX_CACHE_BYTES: '10GiB' }).maxCacheBytes, 10 * 2 ** 30);
    assert.equal(env({ GANTRY_MAX_CACHE_BYTES: '500MB' }).maxCacheBytes, 500e6);
    assert.equal(env({ GANTRY_MAX_CACHE_BYTES: '1234' }).maxCacheBytes, 1234);
    assert.ok(hasProblem(problemsOf(() => env({ GANTRY_MAX_CACHE_BYTES: '10 parsecs' })), /^maxCacheBytes/));
  });

  test('GANTRY_LOG_LEVEL sets the level; unknown levels are a problem', () => {
    assert.equal(env({ GANTRY_LOG_LEVEL: 'silent' }).logLevel, 'silent');
    assert.ok(hasProblem(problemsOf(() => env({ GANTRY_LOG_LEVEL: 'verbose' })), /^logLevel/));
  });

  test('environment overrides beat the file', () => {
    const cfg = parseConfig(
      { listen: ':1111', cacheDir: '/file', tagTtlSeconds: 1, maxCacheBytes: '1GiB', logLevel: 'error' },
      overridesFromEnv({ GANTRY_LISTEN: ':2222', GANTRY_CACHE_DIR: '/env', GANTRY_TAG_TTL_SECONDS: '2', GANTRY_MAX_CACHE_BYTES: '2GiB', GANTRY_LOG_LEVEL: 'warn' }),
    );
    assert.equal(cfg.listen.port, 2222);
    assert.equal(cfg.cacheDir, '/env');
    assert.equal(cfg.tagTtlSeconds, 2);
    assert.equal(cfg.maxCacheBytes, 2 * 2 ** 30);
    assert.equal(cfg.logLevel, 'warn');
  });

  test('environment upstream URL beats the file URL of the default upstream', () => {
    const cfg = parseConfig({ upstreams: [{ host: 'docker.io', url: 'https://file.example' }] }, overridesFromEnv({ GANTRY_UPSTREAM_URL: 'https://env.example' }));
    assert.equal(cfg.upstreams[0]?.url, 'https://env.example');
  });
});

describe('mergeOverrides precedence', () => {
  test('earlier layers win field by field; undefined does not mask a later layer', () => {
    const flags = { listen: ':1', cacheDir: undefined, tagTtlSeconds: '1' };
    const env = { listen: ':2', cacheDir: '/env', tagTtlSeconds: '2', logLevel: 'warn' };
    assert.deepEqual(mergeOverrides(flags, env), { listen: ':1', cacheDir: '/env', tagTtlSeconds: '1', logLevel: 'warn' });
  });

  test('flags > env > file > defaults, end to end', () => {
    const file = { listen: ':1000', cacheDir: '/file', tagTtlSeconds: 10, logLevel: 'error' };
    const env = overridesFromEnv({ GANTRY_LISTEN: ':2000', GANTRY_CACHE_DIR: '/env' });
    const flags = { listen: ':3000' };
    const cfg = parseConfig(file, mergeOverrides(flags, env));
    assert.equal(cfg.listen.port, 3000);
    assert.equal(cfg.cacheDir, '/env');
    assert.equal(cfg.tagTtlSeconds, 10);
    assert.equal(cfg.logLevel, 'error');
    assert.equal(cfg.maxCacheBytes, 0);
  });

  test('no layers gives no overrides', () => {
    assert.deepEqual(mergeOverrides(), {});
  });
});

describe('DEFAULT_CONFIG is never mutated', () => {
  test('after parses that override everything, including the default upstream in place', () => {
    parseConfig(
      { listen: ':1', cacheDir: '/x', tagTtlSeconds: 1, maxCacheBytes: 5 },
      overridesFromEnv({ GANTRY_UPSTREAM_URL: 'https://other.example', GANTRY_UPSTREAM_USERNAME: 'u', GANTRY_UPSTREAM_PASSWORD: 'p' }),
    );
    const cfg = parseConfig(undefined);
    cfg.listen.port = 1;
    cfg.upstreams[0]!.url = 'https://mutated.example';
    cfg.upstreams.push({ host: 'x', url: 'https://x' });
    assert.deepEqual(DEFAULT_CONFIG, PRISTINE_DEFAULTS);
    assert.deepEqual(parseConfig(undefined).upstreams, [{ host: 'docker.io', url: DOCKER_HUB_URL }]);
  });

  test('DEFAULT_CONFIG itself is frozen', () => {
    assert.ok(Object.isFrozen(DEFAULT_CONFIG));
  });
});

describe('parseSize and parseListen', () => {
  test('parseSize handles units, fractions and rejects junk', () => {
    assert.equal(parseSize('1KiB'), 1024);
    assert.equal(parseSize('1kb'), 1000);
    assert.equal(parseSize('1.5MiB'), 1.5 * 2 ** 20);
    assert.equal(parseSize(' 2 TiB '), 2 * 2 ** 40);
    assert.equal(parseSize(0), 0);
    assert.equal(parseSize(-1), undefined);
    assert.equal(parseSize(1.5), undefined);
    assert.equal(parseSize('1 XB'), undefined);
    assert.equal(parseSize(''), undefined);
    assert.equal(parseSize(null), undefined);
  });

  test('parseListen rejects missing ports and ports above 65535', () => {
    assert.equal(parseListen('localhost'), undefined);
    assert.equal(parseListen('localhost:65536'), undefined);
    assert.deepEqual(parseListen('localhost:65535'), { host: 'localhost', port: 65535 });
    assert.equal(parseListen(5000), undefined);
  });
});

describe('loadConfig', () => {
  test('with neither file nor flags it reads only the environment', async () => {
    assert.equal((await loadConfig({}, { GANTRY_TAG_TTL_SECONDS: '8' })).tagTtlSeconds, 8);
  });
});

describe('config from the command line (flags, env, file)', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'gantry-config-test-'));
  });
  after(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  test('no arguments and an empty environment gives the defaults', async () => {
    const cfg = await loadFromArgv([], {});
    const def = parseConfig(undefined);
    assert.deepEqual(
      [cfg.listen, cfg.cacheDir, cfg.maxCacheBytes, cfg.tagTtlSeconds, cfg.logLevel, cfg.upstreams, cfg.defaultUpstream],
      [def.listen, def.cacheDir, def.maxCacheBytes, def.tagTtlSeconds, def.logLevel, def.upstreams, def.defaultUpstream],
    );
  });

  test('--config reads a YAML file', async () => {
    const file = path.join(dir, 'gantry.yaml');
    await writeFile(
      file,
      [
        'listen: "127.0.0.1:5050"',
        'cacheDir: /tmp/gantry-cache',
        'maxCacheBytes: 10GiB',
        'tagTtlSeconds: 120',
        'upstreams:',
        '  - host: ghcr.io',
        '    url: https://ghcr.io',
        '  - host: docker.io',
        '    url: https://registry-1.docker.io',
        '    username: bob',
        '    password: hunter2',
        '',
      ].join('\n'),
    );
    const cfg = await loadFromArgv(['--config', file], {});
    assert.deepEqual(cfg.listen, { host: '127.0.0.1', port: 5050 });
    assert.equal(cfg.cacheDir, '/tmp/gantry-cache');
    assert.equal(cfg.maxCacheBytes, 10 * 2 ** 30);
    assert.equal(cfg.tagTtlSeconds, 120);
    assert.equal(cfg.defaultUpstream, 'ghcr.io');
    assert.deepEqual(cfg.upstreams[1], { host: 'docker.io', url: DOCKER_HUB_URL, username: 'bob', password: 'hunter2' });
  });

  test('-c and GANTRY_CONFIG also name the file', async () => {
    const file = path.join(dir, 'short.yaml');
    await writeFile(file, 'tagTtlSeconds: 7\n');
    assert.equal((await loadFromArgv(['-c', file], {})).tagTtlSeconds, 7);
    assert.equal((await loadFromArgv([], { GANTRY_CONFIG: file })).tagTtlSeconds, 7);
  });

  test('flags beat env, env beats the file', async () => {
    const file = path.join(dir, 'prec.yaml');
    await writeFile(file, 'listen: ":1000"\ncacheDir: /file\ntagTtlSeconds: 10\nlogLevel: error\n');
    const cfg = await loadFromArgv(['--config', file, '--listen', ':3000', '--log-level', 'debug'], {
      GANTRY_LISTEN: ':2000',
      GANTRY_CACHE_DIR: '/env',
      GANTRY_LOG_LEVEL: 'warn',
    });
    assert.equal(cfg.listen.port, 3000);
    assert.equal(cfg.cacheDir, '/env');
    assert.equal(cfg.tagTtlSeconds, 10);
    assert.equal(cfg.logLevel, 'debug');
  });

  test('every flag is understood', async () => {
    const cfg = await loadFromArgv(
      ['--listen', ':6001', '--cache-dir', '/flags', '--upstream-url', 'https://flag.example', '--tag-ttl-seconds', '9', '--max-cache-bytes', '1MiB', '--log-level', 'trace'],
      {},
    );
    assert.deepEqual(cfg.listen, { host: '0.0.0.0', port: 6001 });
    assert.equal(cfg.cacheDir, '/flags');
    assert.equal(cfg.upstreams[0]?.url, 'https://flag.example');
    assert.equal(cfg.tagTtlSeconds, 9);
    assert.equal(cfg.maxCacheBytes, 2 ** 20);
    assert.equal(cfg.logLevel, 'trace');
  });

  test('a missing config file is a ConfigError naming the file', async () => {
    const missing = path.join(dir, 'does-not-exist.yaml');
    const problems = await problemsOfAsync(() => loadFromArgv(['--config', missing], {}));
    assert.equal(problems.length, 1);
    assert.ok(problems[0]?.includes(missing), problems.join('\n'));
  });

  test('a file that is not valid YAML is a ConfigError naming the file', async () => {
    const file = path.join(dir, 'broken.yaml');
    await writeFile(file, 'listen: [unclosed\n');
    const problems = await problemsOfAsync(() => loadFromArgv(['--config', file], {}));
    assert.ok(problems[0]?.includes(file), problems.join('\n'));
  });

  test('problems in the file are all reported', async () => {
    const file = path.join(dir, 'bad.yaml');
    await writeFile(file, 'listen: nope\nbogus: 1\n');
    const problems = await problemsOfAsync(() => loadFromArgv(['--config', file], {}));
    assert.ok(hasProblem(problems, /^listen:/));
    assert.ok(hasProblem(problems, /^bogus: unknown key/));
  });

  test('an unknown flag or a stray argument exits 2 with one line naming it', async () => {
    for (const [argv, named] of [[['--nope'], '--nope'], [['stray'], 'stray']] as const) {
      const io = captureIo();
      assert.deepEqual(await parseCommandLine(argv, io), { exitCode: EXIT_USAGE });
      assert.equal(io.stdout(), '');
      assert.match(io.stderr(), new RegExp(`^gantry: .*${named}.*\\n$`));
      assert.equal(io.stderr().trimEnd().split('\n').length, 1, io.stderr());
    }
  });

  test('--help prints the usage and exits 0', async () => {
    const io = captureIo();
    assert.deepEqual(await parseCommandLine(['--help'], io), { exitCode: 0 });
    assert.match(io.stdout(), /^Usage: gantry/);
    assert.equal(io.stderr(), '');
  });
});

describe('the settings table', () => {
  const secrets = (env: NodeJS.ProcessEnv = {}, files: Record<string, string> = {}): SecretSource => ({
    env,
    readFile: (p) => {
      const text = files[p];
      if (text === undefined) throw new Error(`ENOENT: no such file, open '${p}'`);
      return text;
    },
  });
  const up = { host: 'registry.internal:5000', url: 'https://registry.internal:5000', username: 'mirror' };

  test('every setting has help; env vars and flags are each declared by one setting', () => {
    const all = [...walkSettings(SETTINGS), ...walkSettings(UPSTREAM_FIELDS, 'upstreams[].')];
    for (const [key, s] of all) assert.ok(s.help.length > 0, key);
    const envs = all.flatMap(([, s]) => (s.env ? [s.env] : []));
    const flags = all.flatMap(([, s]) => (s.flag ? [s.flag] : []));
    assert.equal(new Set(envs).size, envs.length);
    assert.equal(new Set(flags).size, flags.length);
    assert.ok(envs.every((e) => e.startsWith('GANTRY_')), envs.join());
    assert.deepEqual(Object.keys(overridesFromEnv({})).sort(), [
      'cacheDir', 'cluster.advertiseUrl', 'cluster.nodeId', 'cluster.peerToken', 'cluster.redis.url', 'listen', 'logLevel', 'maxCacheBytes',
      'storage.s3.bucket', 'storage.s3.endpoint', 'storage.s3.forcePathStyle', 'storage.s3.maxBytes', 'storage.s3.prefix', 'storage.s3.region',
      'tagTtlSeconds', 'tls.certFile', 'tls.keyFile', 'upstreamPassword', 'upstreamUrl', 'upstreamUsername', 'workers',
    ]);
  });

  test('DEFAULT_CONFIG is the table\'s defaults, frozen all the way down', () => {
    assert.ok(Object.isFrozen(DEFAULT_CONFIG.auth) && Object.isFrozen(DEFAULT_CONFIG.listen) && Object.isFrozen(DEFAULT_CONFIG.upstreams[0]));
    assert.deepEqual(DEFAULT_CONFIG.breaker, { failureThreshold: 5, cooldownSeconds: 30, probeIntervalSeconds: 1, trialTimeoutSeconds: 10 });
    assert.deepEqual(DEFAULT_CONFIG.auth, { tokenTtlSeconds: 300, accessCheckTtlSeconds: 60, failClosed: true, challengePing: true });
  });

  test('sections: each key by its kind and bounds, unknown keys and non-mappings reported', () => {
    const cfg = parseConfig({ breaker: { probeIntervalSeconds: 0, trialTimeoutSeconds: 3 }, auth: { failClosed: false, htpasswdFile: '/etc/gantry/htpasswd' } });
    assert.deepEqual(cfg.breaker, { failureThreshold: 5, cooldownSeconds: 30, probeIntervalSeconds: 0, trialTimeoutSeconds: 3 });
    assert.equal(cfg.auth.failClosed, false);
    assert.equal(cfg.auth.htpasswdFile, '/etc/gantry/htpasswd');
    const problems = problemsOf(() =>
      parseConfig({ breaker: { failureThreshold: 0, trialTimeoutSeconds: 0, bogus: 1 }, auth: { failClosed: 'no', tokenTtlSeconds: -1 }, proxy: 'http://p' }),
    );
    for (const re of [/^breaker\.failureThreshold: expected an integer >= 1, got 0$/, /^breaker\.trialTimeoutSeconds: expected an integer >= 1/, /^breaker\.bogus: unknown key$/, /^auth\.failClosed: expected true or false$/, /^auth\.tokenTtlSeconds: expected an integer >= 0, got -1$/, /^proxy: expected a mapping$/]) {
      assert.ok(hasProblem(problems, re), `missing ${re}: ${problems.join('\n')}`);
    }
    assert.equal(problems.length, 6, problems.join('\n'));
  });

  test('cacheLowWatermarkPercent is bounded on both sides', () => {
    assert.ok(hasProblem(problemsOf(() => parseConfig({ cacheLowWatermarkPercent: 0 })), /^cacheLowWatermarkPercent: expected an integer >= 1/));
    assert.ok(hasProblem(problemsOf(() => parseConfig({ cacheLowWatermarkPercent: 101 })), /^cacheLowWatermarkPercent: expected at most 100$/));
    assert.equal(parseConfig({ cacheLowWatermarkPercent: 100 }).cacheLowWatermarkPercent, 100);
  });

  test('proxy settings fall back to HTTP(S)_PROXY / NO_PROXY, and the file wins over them', () => {
    const env = { HTTPS_PROXY: 'http://env-proxy:3128', no_proxy: '.corp', HTTP_PROXY: '' };
    assert.deepEqual(parseConfig(undefined, {}, secrets(env)).proxy, { httpsProxy: 'http://env-proxy:3128', noProxy: '.corp' });
    assert.deepEqual(parseConfig({ proxy: { httpsProxy: 'http://file-proxy:3128' } }, {}, secrets(env)).proxy, { httpsProxy: 'http://file-proxy:3128', noProxy: '.corp' });
  });

  test('an upstream secret comes inline, from a named variable or from a file (one trailing newline dropped)', () => {
    const s = secrets({ REG_PW: 'from-env' }, { '/run/secrets/pw': 'from-file\n' });
    assert.equal(parseConfig({ upstreams: [{ ...up, password: 'inline' }] }, {}, s).upstreams[0]?.password, 'inline');
    assert.equal(parseConfig({ upstreams: [{ ...up, passwordEnv: 'REG_PW' }] }, {}, s).upstreams[0]?.password, 'from-env');
    assert.equal(parseConfig({ upstreams: [{ ...up, passwordFile: '/run/secrets/pw' }] }, {}, s).upstreams[0]?.password, 'from-file');
    const token = parseConfig({ upstreams: [{ host: 'ghcr.io', url: 'https://ghcr.io', tokenFile: '/run/secrets/pw' }] }, {}, s).upstreams[0];
    assert.deepEqual(token, { host: 'ghcr.io', url: 'https://ghcr.io', token: 'from-file' });
  });

  test('upstream secret problems name the form used, and never echo a secret', () => {
    const s = secrets({ REG_PW: 'hunter2' });
    const problems = problemsOf(() =>
      parseConfig(
        {
          upstreams: [
            { ...up, password: 'hunter2', passwordEnv: 'REG_PW' },
            { ...up, host: 'b.io', passwordEnv: 'UNSET_VAR' },
            { ...up, host: 'c.io', passwordFile: '/missing' },
            { host: 'd.io', url: 'https://d.io', token: 't', username: 'u', password: 'p' },
          ],
        },
        {},
        s,
      ),
    );
    assert.ok(hasProblem(problems, /^upstreams\[0\]: set only one of password, passwordEnv$/), problems.join('\n'));
    assert.ok(hasProblem(problems, /^upstreams\[1\]\.passwordEnv: environment variable UNSET_VAR is not set$/), problems.join('\n'));
    assert.ok(hasProblem(problems, /^upstreams\[2\]\.passwordFile: cannot read \/missing: ENOENT/), problems.join('\n'));
    assert.ok(hasProblem(problems, /^upstreams\[3\]: use either a token or username\/password$/), problems.join('\n'));
    assert.ok(!problems.some((p) => p.includes('hunter2')));
  });

  test('upstream entry keys: each by its kind, hosts lowercased', () => {
    const cfg = parseConfig({
      upstreams: [{ host: 'Reg.Internal', url: 'https://reg.internal/', prefix: 'internal', virtualHosts: ['Mirror.Corp'], realmHosts: ['Auth.Corp'], allow: ['team/**'], deny: ['team/secret'], serveCachedOn404: true, tagTtlSeconds: '60' }],
    });
    assert.deepEqual(cfg.upstreams, [
      { host: 'reg.internal', url: 'https://reg.internal', prefix: 'internal', virtualHosts: ['mirror.corp'], realmHosts: ['auth.corp'], allow: ['team/**'], deny: ['team/secret'], serveCachedOn404: true, tagTtlSeconds: 60 },
    ]);
    const problems = problemsOf(() => parseConfig({ upstreams: [{ host: 'bad host', url: 'https://x', prefix: 'Two/Parts', virtualHosts: 'one', serveCachedOn404: 'yes' }, 'not a mapping'] }));
    for (const re of [/^upstreams\[0\]\.host: expected a registry host/, /^upstreams\[0\]\.prefix: expected one lowercase path component/, /^upstreams\[0\]\.virtualHosts: expected a list of strings$/, /^upstreams\[0\]\.serveCachedOn404: expected true or false$/, /^upstreams\[1\]: expected a mapping$/]) {
      assert.ok(hasProblem(problems, re), `missing ${re}: ${problems.join('\n')}`);
    }
  });

  test('a prefix or virtual host that selects two upstreams is a problem', () => {
    const problems = problemsOf(() => parseConfig({ upstreams: [{ host: 'a.io', url: 'https://a.io', prefix: 'p' }, { host: 'b.io', url: 'https://b.io', prefix: 'p', virtualHosts: ['v'] }, { host: 'c.io', url: 'https://c.io', virtualHosts: ['v'] }] }));
    assert.ok(hasProblem(problems, /^upstreams: p selects both a\.io and b\.io$/), problems.join('\n'));
    assert.ok(hasProblem(problems, /^upstreams: v selects both b\.io and c\.io$/), problems.join('\n'));
  });
});

describe('cluster and storage.s3 (several nodes, one cache)', () => {
  const noSecrets: SecretSource = { env: {}, readFile: () => assert.fail('no file expected') };

  test('absent: no shared tier and no coordination, exactly as a single node', () => {
    const cfg = parseConfig(undefined, {}, noSecrets);
    assert.equal(cfg.storage.s3.bucket, undefined);
    assert.equal(cfg.cluster.redis.url, undefined);
    assert.equal(cfg.cluster.peerToken, undefined);
  });

  test("the issue's example file parses, with the peer token from a file", () => {
    const cfg = parseConfig(
      {
        cluster: { nodeId: 'gantry-a', advertiseUrl: 'http://10.0.0.5:5000', peerTokenFile: '/run/secrets/gantry-peer', redis: { url: 'redis://redis:6379/0' } },
        storage: { s3: { endpoint: 'http://minio:9000', region: 'us-east-1', bucket: 'gantry', prefix: 'cache/', forcePathStyle: true } },
      },
      {},
      { env: {}, readFile: (p) => (p === '/run/secrets/gantry-peer' ? 'a-long-shared-peer-secret\n' : assert.fail(p)) },
    );
    assert.deepEqual(cfg.cluster, { nodeId: 'gantry-a', advertiseUrl: 'http://10.0.0.5:5000', peerToken: 'a-long-shared-peer-secret', redis: { url: 'redis://redis:6379/0' } });
    assert.deepEqual(cfg.storage.s3, { endpoint: 'http://minio:9000', region: 'us-east-1', bucket: 'gantry', prefix: 'cache/', forcePathStyle: true, maxBytes: 0, sweepSeconds: 30 });
  });

  test('every GANTRY_* variable of the issue sets its setting', () => {
    const env = {
      GANTRY_NODE_ID: 'b', GANTRY_ADVERTISE_URL: 'http://127.0.0.1:5001', GANTRY_PEER_TOKEN: '0123456789abcdef', GANTRY_REDIS_URL: 'redis://127.0.0.1:6379/0',
      GANTRY_S3_ENDPOINT: 'http://127.0.0.1:8080', GANTRY_S3_REGION: 'us-east-1', GANTRY_S3_BUCKET: 'gantry', GANTRY_S3_PREFIX: 'a/b/', GANTRY_S3_FORCE_PATH_STYLE: 'true', GANTRY_S3_MAX_BYTES: '2TiB',
    };
    assert.deepEqual(problemsOf(() => parseConfig(undefined, overridesFromEnv({ GANTRY_S3_BUCKET: 'gantry', GANTRY_S3_FORCE_PATH_STYLE: 'yes' }), noSecrets)), ['storage.s3.forcePathStyle: expected true or false']);
    const cfg = parseConfig(undefined, overridesFromEnv(env), { env, readFile: () => assert.fail('no file expected') });
    assert.deepEqual(cfg.cluster, { nodeId: 'b', advertiseUrl: 'http://127.0.0.1:5001', peerToken: '0123456789abcdef', redis: { url: 'redis://127.0.0.1:6379/0' } });
    assert.deepEqual(cfg.storage.s3, { endpoint: 'http://127.0.0.1:8080', region: 'us-east-1', bucket: 'gantry', prefix: 'a/b/', forcePathStyle: true, maxBytes: 2 * 2 ** 40, sweepSeconds: 30 });
  });

  test('every problem at once: redis without a peer secret or an address, s3 without a bucket, bad names', () => {
    const problems = problemsOf(() =>
      parseConfig({ cluster: { nodeId: 'no spaces', redis: { url: 'http://redis:6379' } }, storage: { s3: { endpoint: 'http://minio:9000', prefix: '/abs' } } }, {}, noSecrets),
    );
    assert.deepEqual([...problems].sort(), [
      'cluster.advertiseUrl: required with cluster.redis (how the other nodes reach this one)',
      'cluster.nodeId: expected 1-64 letters, digits, `.`, `_` or `-`',
      'cluster.peerToken: required with cluster.redis (or peerTokenEnv / peerTokenFile, or GANTRY_PEER_TOKEN)',
      'cluster.redis.url: expected a redis:// or rediss:// URL',
      'storage.s3.bucket: required when storage.s3 is set (the shared tier\'s bucket)',
      'storage.s3.prefix: expected empty, or path segments each ending in `/` (`cache/`)',
    ].sort());
  });

  test('a short peer secret, a bad bucket name and unknown keys are problems', () => {
    const problems = problemsOf(() => parseConfig({ cluster: { peerToken: 'short', colour: 'red' }, storage: { s3: { bucket: 'Not_A_Bucket' }, disk: {} } }, {}, noSecrets));
    assert.deepEqual([...problems].sort(), [
      'cluster.colour: unknown key',
      'cluster.peerToken: must be 16 characters or more',
      'storage.disk: unknown key',
      'storage.s3.bucket: expected an S3 bucket name (3-63 lowercase letters, digits, `.` or `-`)',
    ].sort());
  });

  test('the Redis URL and the peer secret may come from files or variables, and must then exist', () => {
    const problems = problemsOf(() => parseConfig({ cluster: { advertiseUrl: 'http://a:5000', peerTokenEnv: 'PEER', redis: { urlFile: '/nope' } } }, {}, { env: {}, readFile: () => { throw new Error('ENOENT'); } }));
    assert.deepEqual([...problems].sort(), [
      'cluster.peerTokenEnv: environment variable PEER is not set',
      'cluster.redis.urlFile: cannot read /nope: ENOENT',
    ].sort());
  });
});

describe('immutableTags', () => {
  test('global and per upstream, as lists of tag patterns', () => {
    const cfg = parseConfig({ immutableTags: ['v*.*.*', 'sha256-*.sig'], upstreams: [{ host: 'docker.io', url: 'https://registry-1.docker.io', immutableTags: ['*-stable'] }] });
    assert.deepEqual(cfg.immutableTags, ['v*.*.*', 'sha256-*.sig']);
    assert.deepEqual(cfg.upstreams[0]?.immutableTags, ['*-stable']);
    assert.deepEqual(parseConfig({}).immutableTags, []);
  });

  test('a pattern that could never be a tag is a problem naming it', () => {
    const problems = problemsOf(() => parseConfig({ immutableTags: ['v1/*'], upstreams: [{ host: 'docker.io', url: 'https://registry-1.docker.io', immutableTags: ['-x'] }] }));
    assert.ok(hasProblem(problems, /^immutableTags: "v1\/\*" is not a tag pattern/), problems.join('\n'));
    assert.ok(hasProblem(problems, /^upstreams\[0\]\.immutableTags: "-x" is not a tag pattern/), problems.join('\n'));
  });
});
