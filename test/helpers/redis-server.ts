// A real Redis for the tests: Debian's redis-server on 127.0.0.1, no persistence, in a temp dir,
// one process stopped by its PID.
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { startGuardedChild } from './guarded-child.ts';
import { listensOn } from './processes.ts';
import { onFreePort, type SupervisedChild } from './supervised-child.ts';

const REDIS_BIN = '/usr/bin/redis-server';
const READY_DEADLINE_MS = 10_000;

export type RedisServer = {
  /** redis://127.0.0.1:PORT/0 */
  url: string;
  port: number;
  /** How long startRedisServer() took, in ms. */
  startMs: number;
  /** PID of the running redis-server (changes with resume()); 0 while halted. */
  pid(): number;
  /** SIGKILL it, keeping the port: Redis gone as after a crash (its data goes too: no persistence). */
  halt(): Promise<void>;
  /** Start it again on the same port; resolves once it answers PING. */
  resume(): Promise<void>;
  /** Stop it by its PID and remove the temp dir. Idempotent. */
  stop(): Promise<void>;
};

/** Whether a Redis answers PING on 127.0.0.1:port (inline command, so no client library is needed). */
function pings(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: '127.0.0.1', port, timeout: 1000 });
    let said = '';
    const done = (ok: boolean): void => {
      socket.destroy();
      resolve(ok);
    };
    socket.setEncoding('utf8');
    socket.once('connect', () => socket.write('PING\r\n'));
    socket.on('data', (chunk: string) => {
      said += chunk;
      // "-LOADING ..." and the like: not ready yet.
      if (said.includes('\r\n')) done(said.startsWith('+PONG'));
    });
    socket.once('error', () => done(false));
    socket.once('timeout', () => done(false));
    socket.once('end', () => done(false));
  });
}

function spawnReady(dir: string, port: number): Promise<SupervisedChild> {
  let pid = 0;
  return startGuardedChild({
    name: 'redis-server',
    command: REDIS_BIN,
    args: [
      '--port', String(port),
      '--bind', '127.0.0.1',
      '--save', '',
      '--appendonly', 'no',
      '--dir', dir,
      '--daemonize', 'no',
      // Debian's default is /var/log/redis; '' is stdout, so its tail goes into errors.
      '--logfile', '',
    ],
    cwd: dir,
    onSpawn: (p) => (pid = p),
    // Its own socket: another Redis that had the port first would answer PING too.
    ready: async () => (await listensOn(pid, port)) && (await pings(port)),
    readyTimeoutMs: READY_DEADLINE_MS,
    pollMs: 20,
    graceMs: 2000,
  });
}

/** Start redis-server on a free loopback port; resolves once it answers PING. */
export async function startRedisServer(): Promise<RedisServer> {
  if (!existsSync(REDIS_BIN)) throw new Error(`${REDIS_BIN} not found: run scripts/ensure-system-deps.sh (as root)`);
  const t0 = performance.now();
  const dir = await mkdtemp(path.join(tmpdir(), 'redis-server-'));
  let running: SupervisedChild | undefined;
  let port: number;
  try {
    [running, port] = await onFreePort(async (p) => [await spawnReady(dir, p), p] as const);
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
  let stopping: Promise<void> | undefined;
  return {
    url: `redis://127.0.0.1:${port}/0`,
    port,
    startMs: performance.now() - t0,
    pid: () => running?.pid ?? 0,
    async halt() {
      if (!running) return;
      await running.stop({ signal: 'SIGKILL' });
      running = undefined;
    },
    async resume() {
      if (running) throw new Error('redis-server is already running');
      if (stopping) throw new Error('redis-server: stopped');
      running = await spawnReady(dir, port);
    },
    stop() {
      stopping ??= (async () => {
        try {
          await running?.stop();
          running = undefined;
        } finally {
          await rm(dir, { recursive: true, force: true });
        }
      })();
      return stopping;
    },
  };
}
