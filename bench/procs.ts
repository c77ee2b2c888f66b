import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { getFreePort } from '../test/helpers/free-port.ts';

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const NODE_BIN = path.join(REPO_ROOT, 'node_modules', '.bin', 'node');
export const REGISTRY_BIN = '/usr/bin/docker-registry';

const READY_DEADLINE_MS = 20_000;
const PORT_ATTEMPTS = 5;
const MiB = 2 ** 20;

// ---------------------------------------------------------------------------------------------
// /proc/<pid>/status

export type ProcMemory = { rssBytes: number; hwmBytes: number };

/** VmRSS and VmHWM (peak RSS) of a live process; undefined once it is gone. */
export function readProcMemory(pid: number): ProcMemory | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/status`, 'utf8');
  } catch {
    return undefined;
  }
  const kb = (field: string): number => {
    const m = new RegExp(`^${field}:\\s+(\\d+)\\s+kB`, 'm').exec(text);
    return m ? Number(m[1]) * 1024 : 0;
  };
  return { rssBytes: kb('VmRSS'), hwmBytes: kb('VmHWM') };
}

/** Reset VmHWM to the current RSS (`echo 5 > /proc/PID/clear_refs`, Linux >= 4.0); false if not allowed. */
export function resetPeakRss(pid: number): boolean {
  try {
    writeFileSync(`/proc/${pid}/clear_refs`, '5');
    return true;
  } catch {
    return false;
  }
}

/**
 * Samples VmRSS every intervalMs while running. The peak is the larger of the sampled maximum and
 * VmHWM, when VmHWM could be reset at start (otherwise VmHWM holds history from before the window).
 */
export class RssSampler {
  readonly #pid: number;
  readonly #hwmReset: boolean;
  #maxRss = 0;
  #timer: NodeJS.Timeout | undefined;

  constructor(pid: number, intervalMs = 25) {
    this.#pid = pid;
    this.#hwmReset = resetPeakRss(pid);
    this.#sample();
    this.#timer = setInterval(() => this.#sample(), intervalMs);
  }

  #sample(): void {
    const m = readProcMemory(this.#pid);
    if (m && m.rssBytes > this.#maxRss) this.#maxRss = m.rssBytes;
  }

  /** Stop sampling; returns the peak RSS in bytes over the window and how it was measured. */
  stop(): { peakBytes: number; method: string } {
    clearInterval(this.#timer);
    this.#timer = undefined;
    this.#sample();
    const m = readProcMemory(this.#pid);
    if (this.#hwmReset && m) return { peakBytes: Math.max(m.hwmBytes, this.#maxRss), method: 'VmHWM after clear_refs' };
    return { peakBytes: this.#maxRss, method: 'max sampled VmRSS' };
  }
}

// ---------------------------------------------------------------------------------------------
// Managed child processes

export type MirrorProcess = {
  name: string;
  pid: number;
  url: string;
  host: string;
  /** Notable log lines (warnings, errors, panics) seen so far, at most 50 kept. */
  notable(): { count: number; lines: string[] };
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
};

class PortInUseError extends Error {}

function cleanEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, ...extra };
  // Everything is on loopback: a proxy from the environment would only get in the way.
  for (const k of ['HTTP_PROXY', 'HTTPS_PROXY', 'ALL_PROXY', 'http_proxy', 'https_proxy', 'all_proxy']) delete env[k];
  return env;
}

async function launch(spec: LaunchSpec, url: string, host: string): Promise<MirrorProcess> {
  const child: ChildProcess = spawn(spec.command, spec.args, {
    cwd: spec.cwd,
    env: spec.env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let tail = '';
  const notable: string[] = [];
  let notableCount = 0;
  const onData = (chunk: string): void => {
    tail = (tail + chunk).slice(-16_384);
    for (const line of chunk.split('\n')) {
      if (line.trim() === '' || !spec.isNotable(line)) continue;
      notableCount += 1;
      if (notable.length < 50) notable.push(line.length > 600 ? `${line.slice(0, 600)}…` : line);
    }
  };
  for (const s of [child.stdout, child.stderr]) {
    s?.setEncoding('utf8');
    s?.on('data', onData);
  }
  let closed = false;
  let stopping = false;
  let exitInfo: string | undefined;
  const exited = new Promise<void>((resolve) =>
    child.once('close', (code, signal) => {
      closed = true;
      if (!stopping) exitInfo = `${spec.name} exited unexpectedly (code ${code}, signal ${signal}): ${tail.trim().slice(-2000)}`;
      resolve();
    }),
  );
  let spawnError: Error | undefined;
  child.once('error', (err) => {
    spawnError = err;
  });

  const kill = async (): Promise<void> => {
    stopping = true;
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    if (await Promise.race([exited.then(() => true), sleep(6000, false, { ref: false })])) return;
    child.kill('SIGKILL');
    await Promise.race([exited, sleep(3000, undefined, { ref: false })]);
  };

  const deadline = Date.now() + READY_DEADLINE_MS;
  for (;;) {
    if (spawnError) throw spawnError;
    if (closed) {
      if (/address already in use|EADDRINUSE/i.test(tail)) throw new PortInUseError(tail);
      throw new Error(`${spec.name} exited during start-up: ${tail.trim().slice(-2000)}`);
    }
    try {
      const res = await fetch(`${url}/v2/`, { signal: AbortSignal.timeout(1000) });
      await res.arrayBuffer();
      if (res.status === 200) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      await kill();
      throw new Error(`${spec.name} not ready within ${READY_DEADLINE_MS} ms: ${tail.trim().slice(-2000)}`);
    }
    await sleep(50);
  }
  await sleep(50);
  if (closed) throw new PortInUseError(tail); // someone else answered on that port

  return {
    name: spec.name,
    pid: child.pid ?? -1,
    url,
    host,
    notable: () => ({ count: notableCount, lines: [...notable] }),
    exitInfo: () => exitInfo,
    stop: kill,
  };
}

async function launchOnFreePort(make: (port: number) => Promise<LaunchSpec>): Promise<MirrorProcess> {
  let last: unknown;
  for (let i = 0; i < PORT_ATTEMPTS; i++) {
    const port = await getFreePort();
    const host = `127.0.0.1:${port}`;
    try {
      return await launch(await make(port), `http://${host}`, host);
    } catch (err) {
      last = err;
      if (!(err instanceof PortInUseError)) throw err;
    }
  }
  throw new Error(`no free port after ${PORT_ATTEMPTS} attempts`, { cause: last });
}

/** pino JSON at warn (40) or above, or anything that is not JSON (a crash trace). */
function gantryNotable(line: string): boolean {
  try {
    const rec = JSON.parse(line) as { level?: unknown };
    return typeof rec.level === 'number' ? rec.level >= 40 : true;
  } catch {
    return true;
  }
}

/** Gantry as its own process (`node src/main.ts`), configured through GANTRY_* variables. */
export async function startGantryProcess(upstreamUrl: string): Promise<MirrorProcess> {
  if (!existsSync(NODE_BIN)) throw new Error(`${NODE_BIN} not found: run npm ci`);
  const cacheDir = await mkdtemp(path.join(tmpdir(), 'gantry-bench-'));
  try {
    const proc = await launchOnFreePort(async (port) => ({
      name: 'gantry',
      command: NODE_BIN,
      args: [path.join('src', 'main.ts')],
      cwd: REPO_ROOT,
      env: cleanEnv({
        GANTRY_LISTEN: `127.0.0.1:${port}`,
        GANTRY_CACHE_DIR: cacheDir,
        GANTRY_UPSTREAM_URL: upstreamUrl,
        GANTRY_LOG_LEVEL: 'warn',
      }),
      isNotable: gantryNotable,
    }));
    const stop = proc.stop;
    return {
      ...proc,
      async stop() {
        await stop();
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
    const proc = await launchOnFreePort(async (port) => {
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
      return {
        name: 'baseline',
        command: REGISTRY_BIN,
        args: ['serve', configPath],
        env: cleanEnv({}),
        isNotable: (line) => /level=(warn|warning|error|fatal|panic)|^panic:|goroutine \d+ \[/i.test(line),
      };
    });
    const stop = proc.stop;
    return {
      ...proc,
      async stop() {
        await stop();
        await rm(dir, { recursive: true, force: true });
      },
    };
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
}

export function mib(bytes: number): string {
  return `${(bytes / MiB).toFixed(1)} MiB`;
}
