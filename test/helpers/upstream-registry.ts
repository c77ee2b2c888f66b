import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { answers, onFreePort, startSupervisedChild, type SupervisedChild } from './supervised-child.ts';

const execFileP = promisify(execFile);

const REGISTRY_BIN = '/usr/bin/docker-registry';
const READY_DEADLINE_MS = 10_000;

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
    const configPath = path.join(dir, 'config.yml');
    return await onFreePort(async (port) => {
      await writeFile(configPath, renderConfig(dir, port, opts.storage ?? 'inmemory', htpasswdPath, opts.extraConfig));
      return launch(dir, configPath, port);
    });
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
}

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

async function launch(dir: string, configPath: string, port: number): Promise<UpstreamRegistry> {
  const url = `http://127.0.0.1:${port}`;
  let running: SupervisedChild | undefined = await spawnReady(configPath, url);
  let stopping: Promise<void> | undefined;
  const halt = async (opts: { hard?: boolean } = {}): Promise<void> => {
    if (!running) return;
    await running.stop({ signal: opts.hard ? 'SIGKILL' : 'SIGTERM' });
    running = undefined;
  };
  return {
    url,
    host: `127.0.0.1:${port}`,
    port,
    pid: () => running?.pid ?? 0,
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
function spawnReady(configPath: string, url: string): Promise<SupervisedChild> {
  return startSupervisedChild({
    name: 'docker-registry',
    command: REGISTRY_BIN,
    args: ['serve', configPath],
    capture: 'stderr',
    ready: () => answers(`${url}/v2/`, (s) => s === 200 || s === 401),
    readyTimeoutMs: READY_DEADLINE_MS,
    pollMs: 20,
    settleMs: 20,
    graceMs: 3000,
  });
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
