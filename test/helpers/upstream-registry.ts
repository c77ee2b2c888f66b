import { spawn, execFile } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { getFreePort } from './free-port.ts';

const execFileP = promisify(execFile);

const REGISTRY_BIN = '/usr/bin/docker-registry';
const READY_DEADLINE_MS = 10_000;
const PORT_ATTEMPTS = 5;

export type UpstreamRegistryOptions = {
  htpasswd?: { username: string; password: string };
  storage?: 'inmemory' | 'filesystem';
  /** Top-level config keys merged over the generated ones (e.g. `{ auth: { token: {...} } }`). JSON-serialisable. */
  extraConfig?: Record<string, unknown>;
};

export type UpstreamRegistry = {
  url: string;
  host: string;
  port: number;
  /** PID of the running registry (changes with resume()). */
  pid(): number;
  /** Kill the process (SIGKILL when `hard`), keeping its data and port: an upstream that went away. */
  halt(opts?: { hard?: boolean }): Promise<void>;
  /** Start it again on the same port and data; resolves once it answers, with that moment (performance.now()). */
  resume(): Promise<number>;
  stop(): Promise<void>;
};

/**
 * Start Debian's docker-registry (distribution 2.8) on 127.0.0.1 with a throwaway config.
 * Resolves once GET /v2/ answers 200 (or 401 with htpasswd).
 */
export async function startUpstreamRegistry(opts: UpstreamRegistryOptions = {}): Promise<UpstreamRegistry> {
  if (!existsSync(REGISTRY_BIN)) {
    throw new Error(`${REGISTRY_BIN} not found: apt-get install docker-registry`);
  }
  const dir = await mkdtemp(path.join(tmpdir(), 'upstream-registry-'));
  try {
    let htpasswdPath: string | undefined;
    if (opts.htpasswd) {
      htpasswdPath = path.join(dir, 'htpasswd');
      const line = await htpasswdLine(opts.htpasswd.username, opts.htpasswd.password);
      await writeFile(htpasswdPath, `${line}\n`, { mode: 0o600 });
    }
    let lastError: unknown;
    for (let attempt = 0; attempt < PORT_ATTEMPTS; attempt++) {
      const port = await getFreePort();
      const configPath = path.join(dir, 'config.yml');
      await writeFile(configPath, renderConfig(dir, port, opts.storage ?? 'inmemory', htpasswdPath, opts.extraConfig));
      try {
        return await launch(dir, configPath, port);
      } catch (err) {
        lastError = err;
        if (!(err instanceof PortInUseError)) throw err;
      }
    }
    throw new Error(`docker-registry: no free port after ${PORT_ATTEMPTS} attempts`, { cause: lastError });
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
}

class PortInUseError extends Error {}

// JSON is valid YAML, so the config needs no YAML serializer.
function renderConfig(
  dir: string,
  port: number,
  storage: 'inmemory' | 'filesystem',
  htpasswdPath: string | undefined,
  extraConfig: Record<string, unknown> = {},
): string {
  const config: Record<string, unknown> = {
    version: '0.1',
    log: { level: 'error', accesslog: { disabled: true } },
    storage: {
      ...(storage === 'filesystem' ? { filesystem: { rootdirectory: path.join(dir, 'data') } } : { inmemory: {} }),
      delete: { enabled: true },
      maintenance: { uploadpurging: { enabled: false } },
    },
    // A fixed secret silences the "No HTTP secret provided" warning.
    http: { addr: `127.0.0.1:${port}`, secret: randomBytes(16).toString('hex') },
  };
  if (htpasswdPath !== undefined) config['auth'] = { htpasswd: { realm: 'test-registry', path: htpasswdPath } };
  return JSON.stringify({ ...config, ...extraConfig }, null, 2);
}

type Running = { child: ChildProcess; exited: Promise<void>; readyAt: number };

async function launch(dir: string, configPath: string, port: number): Promise<UpstreamRegistry> {
  const url = `http://127.0.0.1:${port}`;
  let running: Running | undefined = await spawnReady(configPath, url);
  let stopping: Promise<void> | undefined;
  const halt = async (opts: { hard?: boolean } = {}): Promise<void> => {
    if (!running) return;
    await kill(running.child, running.exited, opts.hard ? 'SIGKILL' : 'SIGTERM');
    running = undefined;
  };
  return {
    url,
    host: `127.0.0.1:${port}`,
    port,
    pid: () => running?.child.pid ?? 0,
    halt,
    async resume() {
      if (running) throw new Error('docker-registry is already running');
      running = await spawnReady(configPath, url);
      return running.readyAt;
    },
    stop() {
      stopping ??= (async () => {
        await halt();
        await rm(dir, { recursive: true, force: true });
      })();
      return stopping;
    },
  };
}

/** Spawn the registry and wait until GET /v2/ answers (200, or 401 with auth). */
async function spawnReady(configPath: string, url: string): Promise<Running> {
  const child = spawn(REGISTRY_BIN, ['serve', configPath], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr?.setEncoding('utf8');
  child.stderr?.on('data', (chunk: string) => {
    stderr = (stderr + chunk).slice(-8192);
  });
  // 'close' (not 'exit') so stderr is fully read before we look for EADDRINUSE in it.
  let closed = false;
  const exited = new Promise<void>((resolve) =>
    child.once('close', () => {
      closed = true;
      resolve();
    }),
  );
  let spawnError: Error | undefined;
  child.once('error', (err) => {
    spawnError = err;
  });

  const assertRunning = (): void => {
    if (spawnError) throw spawnError;
    if (!closed) return;
    if (/address already in use/i.test(stderr)) throw new PortInUseError(stderr);
    throw new Error(`docker-registry exited (${child.exitCode ?? child.signalCode}): ${stderr.trim()}`);
  };

  const deadline = Date.now() + READY_DEADLINE_MS;
  let readyAt = 0;
  for (;;) {
    assertRunning();
    try {
      const res = await fetch(`${url}/v2/`, { signal: AbortSignal.timeout(1000) });
      await res.arrayBuffer();
      readyAt = performance.now();
      if (res.status === 200 || res.status === 401) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      await kill(child, exited, 'SIGTERM');
      throw new Error(`docker-registry not ready within ${READY_DEADLINE_MS} ms: ${stderr.trim()}`);
    }
    await sleep(20);
  }
  // Another process may own the port and have answered for us; ours would have died on EADDRINUSE.
  await sleep(20);
  assertRunning();
  return { child, exited, readyAt };
}

async function kill(child: ChildProcess, exited: Promise<void>, signal: NodeJS.Signals): Promise<void> {
  if (child.exitCode === null && child.signalCode === null) child.kill(signal);
  const graceful = await Promise.race([exited.then(() => true), sleep(3000, false, { ref: false })]);
  if (graceful) return;
  child.kill('SIGKILL');
  const killed = await Promise.race([exited.then(() => true), sleep(3000, false, { ref: false })]);
  if (!killed) throw new Error(`docker-registry pid ${child.pid} did not exit after SIGKILL`);
}

/**
 * distribution only accepts bcrypt htpasswd entries. Prefer apache2-utils' htpasswd; otherwise use
 * perl's crypt(), which on Debian goes through libxcrypt and supports bcrypt ($2y$). perl-base is Essential.
 */
async function htpasswdLine(username: string, password: string): Promise<string> {
  if (username.includes(':')) throw new Error('htpasswd username must not contain ":"');
  const htpasswd = ['/usr/bin/htpasswd', '/usr/sbin/htpasswd'].find((p) => existsSync(p));
  if (htpasswd !== undefined) {
    // -C 5 keeps test logins fast; bcrypt's minimum cost is 4.
    const { stdout } = await execFileP(htpasswd, ['-nbB', '-C', '5', username, password], { timeout: 10_000 });
    return stdout.trim();
  }
  const perl = ['/usr/bin/perl', '/bin/perl'].find((p) => existsSync(p));
  if (perl === undefined) {
    throw new Error('htpasswd auth needs bcrypt: install apache2-utils (htpasswd) or perl');
  }
  const alphabet = './ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';
  const salt = Array.from(randomBytes(21), (b) => alphabet[b % 64]).join('') + '.'; // last char: low bits must be 0
  const { stdout } = await execFileP(perl, ['-e', 'print crypt($ENV{PW}, $ENV{SALT})'], {
    env: { PW: password, SALT: `$2y$05$${salt}` },
    timeout: 10_000,
  });
  if (!stdout.startsWith('$2y$05$') || stdout.length !== 60) {
    throw new Error(`perl crypt() did not produce a bcrypt hash (libcrypt without bcrypt?): ${JSON.stringify(stdout)}; install apache2-utils`);
  }
  return `${username}:${stdout}`;
}
