import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { answers, onFreePort, startSupervisedChild } from '../test/helpers/supervised-child.ts';
import { UsageError } from './options.ts';
import { CpuMeter } from './proctree.ts';

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const NODE_BIN = path.join(REPO_ROOT, 'node_modules', '.bin', 'node');
export const REGISTRY_BIN = '/usr/bin/docker-registry';

const READY_DEADLINE_MS = 20_000;

// Memory and CPU of process trees: bench/proctree.ts (re-exported for run.ts and serve.ts).
export { CpuMeter, TreeMemorySampler, describeTreeMemory, mib, readProcMemory, readTreeMemory, type MemoryPeak, type TreeMemory } from './proctree.ts';

// ---------------------------------------------------------------------------------------------
// Managed child processes

export type MirrorProcess = {
  name: string;
  pid: number;
  url: string;
  host: string;
  /** Notable log lines (warnings, errors, panics) seen so far, at most 200 kept, with Date.now() on arrival. */
  notable(): { count: number; lines: Array<{ at: number; line: string }> };
  /** Set when the process exited while it should have been running. */
  exitInfo(): string | undefined;
  stop(): Promise<void>;
};

type LaunchSpec = {
  name: string;
  command: string;
  args: string[];
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** Decides whether a log line is worth reporting. */
  isNotable: (line: string) => boolean;
  /** stop(): how long SIGTERM has before SIGKILL. */
  graceMs: number;
  /** Own process group, so a SIGKILL after the grace period also reaches its children (nginx's workers). */
  group?: boolean;
};

function cleanEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, ...extra };
  // Everything is on loopback: a proxy from the environment would only get in the way, and
  // neither would a config file named by the environment.
  for (const k of ['HTTP_PROXY', 'HTTPS_PROXY', 'ALL_PROXY', 'http_proxy', 'https_proxy', 'all_proxy', 'GANTRY_CONFIG']) delete env[k];
  return env;
}

/** Start the spec on `port` and wait until GET /v2/ answers (401: a mirror that challenges the ping is up all the same). */
async function launch(spec: LaunchSpec, port: number): Promise<MirrorProcess> {
  const host = `127.0.0.1:${port}`;
  const url = `http://${host}`;
  const notable: Array<{ at: number; line: string }> = [];
  let notableCount = 0;
  const proc = await startSupervisedChild({
    name: spec.name,
    command: spec.command,
    args: spec.args,
    ...(spec.cwd !== undefined ? { cwd: spec.cwd } : {}),
    ...(spec.env !== undefined ? { env: spec.env } : {}),
    onLine: (line) => {
      if (!spec.isNotable(line)) return;
      notableCount += 1;
      if (notable.length < 200) notable.push({ at: Date.now(), line: line.length > 600 ? `${line.slice(0, 600)}…` : line });
    },
    ready: () => answers(`${url}/v2/`, (s) => s === 200 || s === 401),
    readyTimeoutMs: READY_DEADLINE_MS,
    pollMs: 50,
    settleMs: 50,
    graceMs: spec.graceMs,
    ...(spec.group === true ? { group: true } : {}),
  });
  return {
    name: spec.name,
    pid: proc.pid,
    url,
    host,
    notable: () => ({ count: notableCount, lines: [...notable] }),
    exitInfo: proc.exitInfo,
    stop: () => proc.stop(),
  };
}

/** pino JSON at warn (40) or above, or anything that is not JSON (a crash trace). */
function gantryNotable(line: string): boolean {
  // At the default level (info) every request logs a line: read the level without parsing the JSON,
  // so the bench process spends little of the CPU it shares with the server under test on them.
  const lead = /^\{"level":(\d+),/.exec(line);
  if (lead) return Number(lead[1]) >= 40;
  try {
    const rec = JSON.parse(line) as { level?: unknown };
    return typeof rec.level === 'number' ? rec.level >= 40 : true;
  } catch {
    return true;
  }
}

/**
 * `npm run build`: bin/gantry then runs the compiled dist/main.js, as `npm start` and the
 * container image do, instead of src/main.ts through Node's type stripper (~30 MiB more RSS).
 * It does nothing when dist/ is current, and never disturbs a Gantry already running from this
 * checkout (scripts/build.ts).
 */
export function buildGantry(): void {
  // package.json's build script is the one definition of the build.
  const r = spawnSync('npm', ['run', '-s', 'build'], { cwd: REPO_ROOT, encoding: 'utf8', timeout: 120_000 });
  if (r.status !== 0) throw new Error(`npm run build failed: ${r.stdout}${r.stderr}${r.error?.message ?? ''}`);
}

/**
 * Gantry as its own process (`bin/gantry`, running the fresh build) with a fresh cache directory,
 * configured through GANTRY_* variables; `env` adds or overrides some (e.g. GANTRY_MAX_CACHE_BYTES).
 * `env` may be a function of the port Gantry will listen on (a cluster node advertises its own URL).
 */
export async function startGantryProcess(
  upstreamUrl: string,
  env: Record<string, string> | ((port: number) => Record<string, string>) = {},
): Promise<MirrorProcess & { cacheDir: string }> {
  if (!existsSync(NODE_BIN)) throw new Error(`${NODE_BIN} not found: run npm ci`);
  buildGantry();
  const cacheDir = await mkdtemp(path.join(tmpdir(), 'gantry-bench-'));
  try {
    const proc = await onFreePort((port) =>
      launch(
        {
          name: 'gantry',
          command: path.join(REPO_ROOT, 'bin', 'gantry'),
          args: [],
          cwd: REPO_ROOT,
          env: cleanEnv({
            GANTRY_LISTEN: `127.0.0.1:${port}`,
            GANTRY_CACHE_DIR: cacheDir,
            GANTRY_UPSTREAM_URL: upstreamUrl,
            GANTRY_LOG_LEVEL: 'warn',
            // bin/gantry is how npm start and deploy/ launch it (runtime flags live there). BENCH_GANTRY_NODE
            // swaps in another Node, e.g. a wrapper script adding --trace-gc.
            GANTRY_NODE: process.env['BENCH_GANTRY_NODE'] ?? NODE_BIN,
            ...(typeof env === 'function' ? env(port) : env),
          }),
          isNotable: gantryNotable,
          graceMs: 10_000,
        },
        port,
      ),
    );
    return {
      ...proc,
      cacheDir,
      async stop() {
        await proc.stop();
        await rm(cacheDir, { recursive: true, force: true });
      },
    };
  } catch (err) {
    await rm(cacheDir, { recursive: true, force: true });
    throw err;
  }
}

/** Debian's docker-registry (distribution 2.8) in proxy (pull-through cache) mode, filesystem storage. */
export async function startBaselineProxy(remoteUrl: string): Promise<MirrorProcess> {
  if (!existsSync(REGISTRY_BIN)) throw new Error(`${REGISTRY_BIN} not found: apt-get install docker-registry`);
  const dir = await mkdtemp(path.join(tmpdir(), 'baseline-bench-'));
  try {
    const proc = await onFreePort(async (port) => {
      const config = {
        version: '0.1',
        log: { level: 'warn', accesslog: { disabled: true } },
        storage: {
          filesystem: { rootdirectory: path.join(dir, 'data') },
          delete: { enabled: true },
          maintenance: { uploadpurging: { enabled: false } },
        },
        http: { addr: `127.0.0.1:${port}`, secret: randomBytes(16).toString('hex') },
        proxy: { remoteurl: remoteUrl },
      };
      const configPath = path.join(dir, 'config.yml');
      await writeFile(configPath, JSON.stringify(config, null, 2)); // JSON is YAML
      return launch(
        {
          name: 'baseline',
          command: REGISTRY_BIN,
          args: ['serve', configPath],
          env: cleanEnv({}),
          // The RepositoryRemover warning is printed at every start with the filesystem driver in proxy mode.
          isNotable: (line) => /level=(warn|warning|error|fatal|panic)|^panic:|goroutine \d+ \[/i.test(line) && !/RempositoryRemover|RepositoryRemover/.test(line),
          graceMs: 6_000,
        },
        port,
      );
    });
    return {
      ...proc,
      async stop() {
        await proc.stop();
        await rm(dir, { recursive: true, force: true });
      },
    };
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
}

export const NGINX_BIN = ['/usr/sbin/nginx', '/usr/local/sbin/nginx', '/usr/local/nginx/sbin/nginx'].find((p) => existsSync(p));
export const NGINX_INSTALL_HINT = 'nginx not found: apt-get update && apt-get install -y nginx-light  (or nginx)';

export type NginxSpec = {
  /** Gantry's cache directory: blobs and manifests are files at `<cacheDir>/blobs/sha256/<2 hex>/<hex>`. */
  cacheDir: string;
  /** Content-Type of every `/v2/<repo>/manifests/sha256:<hex>` answer (the bench serves one manifest). */
  manifestMediaType: string;
};

/**
 * nginx.conf for serving Gantry's cache files at the registry's URLs. Close to a default install
 * (worker_processes auto, an access log in the combined format, keep-alive 65 s) except that
 * `sendfile` is off: Gantry reads files into user space too, so that is the like-for-like yardstick.
 */
export function renderNginxConfig(spec: NginxSpec, prefix: string, port: number, runAsRoot: boolean): string {
  const files = path.join(spec.cacheDir, 'blobs', 'sha256');
  // Digests are fixed-length hex, so the captures cannot name anything outside the cache directory.
  const byDigest = (kind: string): string => `^/v2/.+/${kind}/sha256:(?<p2>[0-9a-f]{2})(?<rest>[0-9a-f]{62})$`;
  return `# written by bench/serve.ts
daemon off;
master_process on;
worker_processes auto;
pid ${path.join(prefix, 'nginx.pid')};
error_log stderr warn;
${runAsRoot ? 'user root;  # workers must read the cache directory (mode 0700, owned by root)\n' : ''}
events {
  worker_connections 1024;
}

http {
  types {}
  default_type application/octet-stream;
  sendfile off;
  keepalive_timeout 65;
  access_log ${path.join(prefix, 'access.log')} combined;
  client_body_temp_path ${path.join(prefix, 'client_body')};
  proxy_temp_path ${path.join(prefix, 'proxy')};
  fastcgi_temp_path ${path.join(prefix, 'fastcgi')};
  uwsgi_temp_path ${path.join(prefix, 'uwsgi')};
  scgi_temp_path ${path.join(prefix, 'scgi')};

  server {
    listen 127.0.0.1:${port};

    location = /v2/ {
      default_type application/json;
      return 200 '{}';
    }
    location ~ "${byDigest('blobs')}" {
      default_type application/octet-stream;
      alias ${files}/$p2/$p2$rest;
      add_header Docker-Content-Digest sha256:$p2$rest;
    }
    location ~ "${byDigest('manifests')}" {
      default_type ${spec.manifestMediaType};
      alias ${files}/$p2/$p2$rest;
      add_header Docker-Content-Digest sha256:$p2$rest;
    }
    location / {
      return 404;
    }
  }
}
`;
}

/**
 * nginx as a round-robin load balancer in front of `backends` (host:port each), as a site would put
 * one in front of several Gantry nodes: HTTP/1.1 keep-alive connections to the back-ends (32 idle
 * ones kept per worker), `proxy_buffering off` (bodies stream through as they arrive instead of
 * being spooled to temp files), the client's Host passed on, an access log as in a default install
 * (the combined format plus `$upstream_addr`, the node that answered).
 *
 * Unbuffered, nginx reads a back-end's body `proxy_buffer_size` bytes at a time, one page (4 KiB)
 * by default: 256 reads and writes per 1 MiB blob. 64 KiB is the usual tuning for large bodies; on
 * the bench machine it cut nginx's CPU for the warm 1 MiB runs from ~0.63 to ~0.37 cores and
 * raised req/s by ~1.5x over the default.
 */
export function renderNginxBalancerConfig(backends: readonly string[], prefix: string, port: number, runAsRoot: boolean, proxyBufferSize = '64k'): string {
  if (backends.length === 0) throw new Error('nginx balancer: no back-ends');
  return `# written by bench/cluster.ts
daemon off;
master_process on;
worker_processes auto;
pid ${path.join(prefix, 'nginx.pid')};
error_log stderr warn;
${runAsRoot ? 'user root;  # the temp dirs under the prefix are mode 0700, owned by root\n' : ''}
events {
  worker_connections 4096;
}

http {
  keepalive_timeout 65;
  # combined, plus the back-end that answered (the bench counts requests per node from it)
  log_format balanced '$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent" $upstream_addr';
  access_log ${path.join(prefix, 'access.log')} balanced;
  client_body_temp_path ${path.join(prefix, 'client_body')};
  proxy_temp_path ${path.join(prefix, 'proxy')};
  fastcgi_temp_path ${path.join(prefix, 'fastcgi')};
  uwsgi_temp_path ${path.join(prefix, 'uwsgi')};
  scgi_temp_path ${path.join(prefix, 'scgi')};

  upstream gantry {
${backends.map((b) => `    server ${b};`).join('\n')}
    keepalive 32;
  }

  server {
    listen 127.0.0.1:${port};

    location / {
      proxy_pass http://gantry;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $http_host;
      proxy_buffering off;
      proxy_buffer_size ${proxyBufferSize};
      proxy_buffers 4 ${proxyBufferSize};
      proxy_read_timeout 300s;
    }
  }
}
`;
}

type NginxProcess = MirrorProcess & { accessLog: string; configPath: string };

/**
 * nginx in the foreground (`daemon off`) under its own temp prefix with the config `render` writes
 * for it; stop() stops it by PID (SIGTERM, then SIGKILL to its group) and removes the prefix.
 */
async function startNginxWith(render: (prefix: string, port: number, runAsRoot: boolean) => string): Promise<NginxProcess> {
  if (NGINX_BIN === undefined) throw new Error(NGINX_INSTALL_HINT);
  const bin = NGINX_BIN;
  const prefix = await mkdtemp(path.join(tmpdir(), 'nginx-bench-'));
  try {
    const configPath = path.join(prefix, 'nginx.conf');
    const proc = await onFreePort(async (port) => {
      await writeFile(configPath, render(prefix, port, process.getuid?.() === 0));
      return launch(
        {
          name: 'nginx',
          command: bin,
          // -e: the error log before the config is read (else /var/log/nginx/error.log).
          args: ['-e', 'stderr', '-p', `${prefix}/`, '-c', configPath],
          env: cleanEnv({}),
          isNotable: () => true, // stderr at warn and above only
          graceMs: 5_000,
          group: true,
        },
        port,
      );
    });
    return {
      ...proc,
      accessLog: path.join(prefix, 'access.log'),
      configPath,
      async stop() {
        await proc.stop();
        await rm(prefix, { recursive: true, force: true });
      },
    };
  } catch (err) {
    await rm(prefix, { recursive: true, force: true });
    throw err;
  }
}

/** nginx serving the files of Gantry's cache directory (renderNginxConfig). */
export function startNginx(spec: NginxSpec): Promise<NginxProcess> {
  return startNginxWith((prefix, port, runAsRoot) => renderNginxConfig(spec, prefix, port, runAsRoot));
}

/**
 * nginx balancing round-robin over `backends` (host:port each; renderNginxBalancerConfig). Ready
 * once GET /v2/ through it answers, so at least one back-end is up.
 */
export function startNginxBalancer(backends: readonly string[], proxyBufferSize?: string): Promise<NginxProcess> {
  return startNginxWith((prefix, port, runAsRoot) => renderNginxBalancerConfig(backends, prefix, port, runAsRoot, proxyBufferSize));
}

// ---------------------------------------------------------------------------------------------
// Waiting for a quiet machine

/**
 * Wait (at most maxMs) until processes outside the bench use less than `threshold` cores for
 * three consecutive one-second windows. Returns the last window's reading.
 */
export async function waitForIdle(maxMs: number, threshold: number): Promise<{ idle: boolean; other: number }> {
  const deadline = Date.now() + maxMs;
  let quiet = 0;
  let other = NaN;
  while (Date.now() < deadline) {
    const m = new CpuMeter();
    await sleep(1000);
    other = m.read().other;
    quiet = other < threshold ? quiet + 1 : 0;
    if (quiet >= 3) return { idle: true, other };
  }
  return { idle: false, other };
}

// ---------------------------------------------------------------------------------------------
// Cleanup on every way out

export type RunGuard = {
  /** Register a cleanup; they run last-registered first. */
  defer(f: () => Promise<void>): void;
  /** Run every registered cleanup (each once; errors are printed, not thrown). */
  cleanup(): Promise<void>;
  /** The run ended normally: drop the deadline and the signal handlers. */
  dispose(): void;
};

/**
 * Cleanups that run at the end, on Ctrl-C / SIGTERM (exit 130) and at a whole-run deadline
 * (exit 1), so no process or temp dir outlives the bench.
 */
export function guardRun(deadlineMs: number): RunGuard {
  const cleanups: Array<() => Promise<void>> = [];
  const cleanup = async (): Promise<void> => {
    while (cleanups.length > 0) {
      const f = cleanups.pop();
      try {
        await f?.();
      } catch (err) {
        process.stderr.write(`cleanup: ${(err as Error).message}\n`);
      }
    }
  };
  let stopping = false;
  const stopAll = (why: string, code: number): void => {
    if (stopping) return;
    stopping = true;
    process.stderr.write(`\n${why}: stopping everything\n`);
    void cleanup().finally(() => process.exit(code));
  };
  const onInt = (): void => stopAll('SIGINT', 130);
  const onTerm = (): void => stopAll('SIGTERM', 130);
  process.once('SIGINT', onInt);
  process.once('SIGTERM', onTerm);
  const deadline = setTimeout(() => stopAll(`bench exceeded its ${Math.round(deadlineMs / 1000)} s deadline`, 1), deadlineMs);
  deadline.unref();
  return {
    defer: (f) => {
      cleanups.push(f);
    },
    cleanup,
    dispose: () => {
      clearTimeout(deadline);
      process.removeListener('SIGINT', onInt);
      process.removeListener('SIGTERM', onTerm);
    },
  };
}

/**
 * A bench's entry point: parse (a usage error exits 2 with the usage), print help, run `main`
 * and exit with what it returns (2 for a UsageError, 1 for a crash).
 */
export async function runBench<O>(parse: () => O | 'help', usage: string, main: (opts: O) => Promise<number>): Promise<void> {
  let opts: O | 'help';
  try {
    opts = parse();
  } catch (err) {
    process.stderr.write(`${(err as Error).message}\n\n${usage}\n`);
    process.exit(2);
  }
  if (opts === 'help') {
    process.stdout.write(`${usage}\n`);
    process.exit(0);
  }
  try {
    process.exitCode = await main(opts);
  } catch (err) {
    if (err instanceof UsageError) {
      process.stderr.write(`${err.message}\n`);
      process.exitCode = 2;
    } else {
      process.stderr.write(`bench failed: ${(err as Error).stack ?? String(err)}\n`);
      process.exitCode = 1;
    }
  }
  // Everything is stopped by now; if some handle still lingers, do not hang the shell.
  setTimeout(() => process.exit(), 2000).unref();
}
