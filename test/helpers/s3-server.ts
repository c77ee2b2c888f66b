// A real S3-compatible store for the tests: OpenStack Swift 2.30 (Debian's packages) with its s3api
// middleware, one node on 127.0.0.1 in a temp dir: memcached (tempauth keeps its tokens there), the
// account, container and object servers and the proxy, each one process (workers = 0), so each
// has one PID to stop. The recipe and its pitfalls: shared/notes/s3-on-loopback.md.
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { S3Client } from '@aws-sdk/client-s3';
import { getFreePort } from './free-port.ts';
import { startGuardedChild } from './guarded-child.ts';
import { listensOn } from './processes.ts';
import { answers, PortInUseError, type SupervisedChild } from './supervised-child.ts';

const execFileP = promisify(execFile);

// Debian's python3: one earlier on PATH (pyenv) has no swift modules.
const PYTHON = '/usr/bin/python3';
const MEMCACHED = '/usr/bin/memcached';
const SWIFT_BIN = '/usr/bin';
const READY_DEADLINE_MS = 30_000;
const RING_DEADLINE_MS = 30_000;
const PORT_ATTEMPTS = 5;
const BACKENDS = ['account', 'container', 'object'] as const;
type Backend = (typeof BACKENDS)[number];

export type S3Server = {
  /** http://127.0.0.1:PORT, for path-style addressing. */
  endpoint: string;
  region: 'us-east-1';
  accessKeyId: string;
  secretAccessKey: string;
  /** How long startS3Server() took, in ms (rings, configs, every server answering). */
  startMs: number;
  /** PIDs of the processes running now (the proxy's is missing while halted). */
  pids(): number[];
  /** kill -9 the proxy only (S3 down), keep the data and the back-end servers. */
  halt(): Promise<void>;
  /** Start the proxy again on the same port; resolves once it answers. */
  resume(): Promise<void>;
  /** Stop every process by its PID and remove the temp dir. Idempotent. */
  stop(): Promise<void>;
};

/** An @aws-sdk/client-s3 client for `s`, set up the way s3api 2.30 needs. */
export function s3ClientFor(s: S3Server): S3Client {
  return new S3Client({
    endpoint: s.endpoint,
    region: s.region,
    forcePathStyle: true,
    credentials: { accessKeyId: s.accessKeyId, secretAccessKey: s.secretAccessKey },
    // Otherwise streamed bodies go out aws-chunked (with a trailing checksum), which s3api 2.30
    // refuses with 501.
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    maxAttempts: 1,
  });
}

/** Start Swift + s3api on loopback ports; resolves once every server answers. */
export async function startS3Server(): Promise<S3Server> {
  for (const file of [PYTHON, MEMCACHED, ...['proxy', ...BACKENDS].map((s) => `${SWIFT_BIN}/swift-${s}-server`)]) {
    if (!existsSync(file)) throw new Error(`${file} not found: run scripts/ensure-system-deps.sh (as root)`);
  }
  const t0 = performance.now();
  const dir = await mkdtemp(path.join(tmpdir(), 's3-server-'));
  try {
    await mkdir(path.join(dir, 'etc'));
    await mkdir(path.join(dir, 'srv', 'node', 'd1'), { recursive: true });
    let last: unknown;
    // getFreePort() is racy and the rings name the back-ends' ports: a port taken meanwhile means
    // new ports, new rings, and every process started again.
    for (let attempt = 0; attempt < PORT_ATTEMPTS; attempt++) {
      const ports = { memcached: await getFreePort(), proxy: await getFreePort(), account: 0, container: 0, object: 0 };
      for (const b of BACKENDS) ports[b] = await getFreePort();
      if (new Set(Object.values(ports)).size !== Object.keys(ports).length) continue;
      await writeConfigs(dir, ports);
      try {
        return await launch(dir, ports, t0);
      } catch (err) {
        if (!(err instanceof PortInUseError)) throw err;
        last = err;
      }
    }
    throw new Error(`s3-server: no free ports after ${PORT_ATTEMPTS} attempts`, { cause: last });
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
}

type Ports = Record<Backend | 'memcached' | 'proxy', number>;

// The RingBuilder API in one process: three swift-ring-builder runs per ring cost seconds more.
const RING_SCRIPT = `
import sys
from swift.common.ring import RingBuilder
etc = sys.argv[1]
for name, port in zip(('account', 'container', 'object'), sys.argv[2:5]):
    b = RingBuilder(8, 1, 1)
    b.add_dev({'id': 0, 'region': 1, 'zone': 1, 'ip': '127.0.0.1', 'port': int(port), 'device': 'd1', 'weight': 100, 'meta': ''})
    b.rebalance()
    b.get_ring().save('%s/%s.ring.gz' % (etc, name))
`;

async function buildRings(etc: string, ports: Ports): Promise<void> {
  try {
    await execFileP(PYTHON, ['-c', RING_SCRIPT, etc, ...BACKENDS.map((b) => String(ports[b]))], {
      env: pythonEnv(),
      timeout: RING_DEADLINE_MS,
    });
  } catch (err) {
    const stderr = (err as { stderr?: unknown }).stderr;
    throw new Error(`s3-server: building the rings failed: ${typeof stderr === 'string' ? stderr.trim().slice(-4000) : String(err)}`);
  }
}

/** Without PYTHONPATH/PYTHONHOME from the caller's environment: Debian's python3 must see only its own modules. */
function pythonEnv(): NodeJS.ProcessEnv {
  // EVENTLET_NO_GREENDNS: eventlet's dnspython resolver costs each process 0.2 s of CPU to import,
  // and every address here is an IP literal.
  const env: NodeJS.ProcessEnv = { ...process.env, PYTHONUNBUFFERED: '1', EVENTLET_NO_GREENDNS: 'yes' };
  delete env['PYTHONPATH'];
  delete env['PYTHONHOME'];
  return env;
}

async function writeConfigs(dir: string, ports: Ports): Promise<void> {
  const common = (port: number): string =>
    [
      '[DEFAULT]',
      'bind_ip = 127.0.0.1',
      `bind_port = ${port}`,
      // Swift retries a taken port for 30 s by default; fail fast so start-up picks other ports.
      'bind_timeout = 1',
      'workers = 0',
      `swift_dir = ${path.join(dir, 'etc')}`,
      `devices = ${path.join(dir, 'srv', 'node')}`,
      `recon_cache_path = ${dir}`,
      'mount_check = false',
      'disable_fallocate = true',
      '',
    ].join('\n');
  const backend = (b: Backend): string =>
    [common(ports[b]), '[pipeline:main]', `pipeline = healthcheck ${b}-server`, '', `[app:${b}-server]`, `use = egg:swift#${b}`, '',
      '[filter:healthcheck]', 'use = egg:swift#healthcheck', ''].join('\n');
  const proxy = [
    common(ports.proxy),
    '[pipeline:main]',
    // slo after s3api: s3api's multipart uploads complete as SLO manifests.
    'pipeline = catch_errors gatekeeper healthcheck proxy-logging cache listing_formats s3api tempauth copy slo dlo proxy-logging proxy-server',
    '',
    '[app:proxy-server]',
    'use = egg:swift#proxy',
    'account_autocreate = true',
    // Swift's defaults (0.5 s to connect to a back-end server, 10 s per read) answer 503 when the
    // test machine's two cores are busy; a real S3 store is not starved by its own clients.
    'conn_timeout = 5',
    'node_timeout = 30',
    'recoverable_node_timeout = 30',
    '',
    '[filter:s3api]',
    'use = egg:swift#s3api',
    'location = us-east-1',
    '',
    '[filter:tempauth]',
    'use = egg:swift#tempauth',
    'user_test_tester = testing .admin',
    '',
    '[filter:cache]',
    'use = egg:swift#memcache',
    `memcache_servers = 127.0.0.1:${ports.memcached}`,
    '',
    // Section name, then the egg entry point it uses.
    ...[['catch_errors', 'catch_errors'], ['gatekeeper', 'gatekeeper'], ['healthcheck', 'healthcheck'], ['proxy-logging', 'proxy_logging'],
      ['listing_formats', 'listing_formats'], ['copy', 'copy'], ['slo', 'slo'], ['dlo', 'dlo']].flatMap(([section, egg]) => [
      `[filter:${section}]`,
      `use = egg:swift#${egg}`,
      '',
    ]),
  ].join('\n');
  await Promise.all([
    ...BACKENDS.map((b) => writeFile(path.join(dir, 'etc', `${b}-server.conf`), backend(b))),
    writeFile(path.join(dir, 'etc', 'proxy-server.conf'), proxy),
  ]);
}

const BIND_FAILED = /Could not bind to/;

function startSwift(dir: string, server: Backend | 'proxy', port: number): Promise<SupervisedChild> {
  let pid = 0;
  return startGuardedChild({
    name: `swift-${server}-server`,
    command: PYTHON,
    // -v: log to stderr (there is no /dev/log here), so its tail can go into errors.
    args: [`${SWIFT_BIN}/swift-${server}-server`, path.join(dir, 'etc', `${server}-server.conf`), '-v'],
    env: pythonEnv(),
    onSpawn: (p) => (pid = p),
    // Its own socket: another Swift on this machine (another test) would answer /healthcheck too.
    ready: async () => (await listensOn(pid, port)) && (await answers(`http://127.0.0.1:${port}/healthcheck`)),
    readyTimeoutMs: READY_DEADLINE_MS,
    pollMs: 50,
    graceMs: 2000,
  }).catch((err: unknown) => {
    // Swift's own words for EADDRINUSE after bind_timeout.
    if (err instanceof Error && !(err instanceof PortInUseError) && BIND_FAILED.test(err.message)) throw new PortInUseError(err.message);
    throw err;
  });
}

function startMemcached(port: number): Promise<SupervisedChild> {
  let pid = 0;
  return startGuardedChild({
    name: 'memcached',
    command: MEMCACHED,
    // As root memcached wants a user to switch to; root itself, as another user would clear the
    // parent-death signal (guarded-child.ts).
    args: ['-l', '127.0.0.1', '-p', String(port), '-U', '0', '-m', '32', ...(process.getuid?.() === 0 ? ['-u', 'root'] : [])],
    onSpawn: (p) => (pid = p),
    ready: () => listensOn(pid, port),
    readyTimeoutMs: READY_DEADLINE_MS,
    pollMs: 20,
    graceMs: 2000,
  });
}

async function stopAll(children: Iterable<SupervisedChild>): Promise<void> {
  const results = await Promise.allSettled([...children].map((c) => c.stop()));
  const failed = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed.length > 0) throw new AggregateError(failed.map((f) => f.reason as unknown), 's3-server: some processes did not stop');
}

async function launch(dir: string, ports: Ports, t0: number): Promise<S3Server> {
  // In parallel: each Swift server spends a second or more of CPU importing Python modules. Only
  // the proxy reads the rings, so they are built while the back-ends start.
  const settled = await Promise.allSettled([
    startMemcached(ports.memcached),
    ...BACKENDS.map((b) => startSwift(dir, b, ports[b])),
    buildRings(path.join(dir, 'etc'), ports).then(() => startSwift(dir, 'proxy', ports.proxy)),
  ]);
  const started = settled.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
  const failures = settled.flatMap((r) => (r.status === 'rejected' ? [r.reason as unknown] : []));
  if (failures.length > 0) {
    const tails = await Promise.all(started.map(async (c) => `--- ${c.name} (was running): ${(await c.output()).trim().slice(-1500) || '(no output)'}`));
    await stopAll(started).catch(() => {});
    const portInUse = failures.find((f) => f instanceof PortInUseError);
    if (portInUse !== undefined) throw portInUse;
    const said = failures.map((f) => (f instanceof Error ? f.message : String(f))).join('\n');
    throw new Error(`s3-server failed to start:\n${said}\n${tails.join('\n')}`);
  }
  const [memcached, account, container, object, firstProxy] = started as [SupervisedChild, SupervisedChild, SupervisedChild, SupervisedChild, SupervisedChild];
  const backends = [memcached, account, container, object];
  let proxy: SupervisedChild | undefined = firstProxy;
  const endpoint = `http://127.0.0.1:${ports.proxy}`;

  let stopping: Promise<void> | undefined;
  const server: S3Server = {
    endpoint,
    region: 'us-east-1',
    accessKeyId: 'test:tester',
    secretAccessKey: 'testing',
    startMs: performance.now() - t0,
    pids: () => [...backends, ...(proxy ? [proxy] : [])].filter((c) => c.running()).map((c) => c.pid),
    async halt() {
      if (!proxy) return;
      await proxy.stop({ signal: 'SIGKILL' });
      proxy = undefined;
    },
    async resume() {
      if (proxy) throw new Error('s3-server: the proxy is already running');
      if (stopping) throw new Error('s3-server: stopped');
      proxy = await startSwift(dir, 'proxy', ports.proxy);
    },
    stop() {
      stopping ??= (async () => {
        try {
          // The proxy first: nothing reaches a back-end that is going away.
          if (proxy) await proxy.stop();
          proxy = undefined;
          await stopAll(backends);
        } finally {
          await rm(dir, { recursive: true, force: true });
        }
      })();
      return stopping;
    },
  };
  return server;
}
