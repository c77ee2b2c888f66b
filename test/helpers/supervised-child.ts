// One way to run a long-lived child process for the tests and the bench: spawn it, keep the tail
// of its output (or append it to a log file), wait for it to be ready against a deadline, tell an
// EADDRINUSE exit apart from any other, and stop it by its PID (SIGTERM, then SIGKILL after a
// grace period). Every wait here is bounded, so an after() hook always gets to run.
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { getFreePort } from './free-port.ts';

/** The child exited during start-up saying its port was taken: try again on another. */
export class PortInUseError extends Error {}

const PORT_IN_USE = /address already in use|EADDRINUSE/i;
const TAIL_CHARS = 16_384;
/** After SIGKILL the kernel reaps at once; longer means the process is stuck in the kernel (D state). */
const KILL_WAIT_MS = 5_000;
const PORT_ATTEMPTS = 5;

export type SupervisedChildOptions = {
  /** Names the child in errors. */
  name: string;
  command: string;
  args?: string[];
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  /** Append stdout and stderr to this file (for daemons whose logs outlive the test); otherwise they are piped and their tail kept. */
  logFile?: string;
  /** Which piped streams to read: both (default), or stderr only (a child that writes its data to stdout). */
  capture?: 'all' | 'stderr';
  /** Called with each complete line of piped output. */
  onLine?: (line: string) => void;
  /** Run in its own process group, so stop() can SIGKILL whatever the child started as well. */
  group?: boolean;
  /** Called with the PID as soon as the child runs, before it is ready (e.g. to kill it if the test process is interrupted). */
  onSpawn?: (pid: number) => void;
  /** Polled until it resolves true: the child is ready. */
  ready: () => Promise<boolean>;
  readyTimeoutMs: number;
  pollMs: number;
  /**
   * Once ready, wait this long and check the child is still running: on a port picked by
   * getFreePort another process may have answered the probe while ours died on EADDRINUSE.
   */
  settleMs?: number;
  /** stop(): how long SIGTERM has before SIGKILL. */
  graceMs: number;
};

export type SupervisedChild = {
  readonly name: string;
  readonly pid: number;
  readonly process: ChildProcess;
  /** performance.now() when ready() first held. */
  readonly readyAt: number;
  /** Resolves when the process has exited and its piped output is read. */
  readonly closed: Promise<void>;
  running(): boolean;
  /** The last 16 KiB of piped output, or the log file. */
  output(): Promise<string>;
  /** Set when the process exited on its own, not through stop(): what it said last. */
  exitInfo(): string | undefined;
  /**
   * Send `signal` (default SIGTERM) to the PID; SIGKILL (to its group with `group`) after
   * `graceMs`; rejects if it is still there KILL_WAIT_MS after that. Idempotent.
   */
  stop(opts?: { signal?: NodeJS.Signals; graceMs?: number }): Promise<void>;
};

/** Resolves true if `p` settles within `ms`, false otherwise (without keeping the process alive). */
function within(p: Promise<unknown>, ms: number): Promise<boolean> {
  return Promise.race([p.then(() => true), sleep(ms, false, { ref: false })]);
}

function signalPid(pid: number, signal: NodeJS.Signals, group: boolean): void {
  try {
    process.kill(group ? -pid : pid, signal);
  } catch {
    // already gone
  }
}

/** A readiness probe: GET `url` answers with a status `ok` accepts (the body is read, so the socket is freed). */
export async function answers(url: string, ok: (status: number) => boolean = (s) => s === 200): Promise<boolean> {
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(1000) });
    await res.arrayBuffer();
    return ok(res.status);
  } catch {
    return false; // not listening yet
  }
}

/** Spawn the child and resolve once it is ready; on any failure it is stopped before the error is thrown. */
export async function startSupervisedChild(opts: SupervisedChildOptions): Promise<SupervisedChild> {
  const fd = opts.logFile === undefined ? undefined : openSync(opts.logFile, 'a');
  const out = fd ?? 'pipe';
  const child = spawn(opts.command, opts.args ?? [], {
    cwd: opts.cwd,
    env: opts.env ?? process.env,
    stdio: ['ignore', opts.capture === 'stderr' && fd === undefined ? 'ignore' : out, out],
    detached: opts.group === true,
  });
  if (fd !== undefined) closeSync(fd);

  let tail = '';
  let partial = '';
  const onData = (chunk: string): void => {
    tail = (tail + chunk).slice(-TAIL_CHARS);
    if (opts.onLine === undefined) return;
    const lines = (partial + chunk).split('\n');
    partial = lines.pop() ?? '';
    for (const line of lines) if (line.trim() !== '') opts.onLine(line);
  };
  for (const s of [child.stdout, child.stderr]) s?.setEncoding('utf8').on('data', onData);
  const output = (): Promise<string> => (opts.logFile === undefined ? Promise.resolve(tail) : readFile(opts.logFile, 'utf8').catch(() => ''));

  let isClosed = false;
  let stopping: Promise<void> | undefined;
  let exitInfo: string | undefined;
  // 'close' rather than 'exit': the piped output is complete by then, so EADDRINUSE can be read from it.
  const closed = new Promise<void>((resolve) =>
    child.once('close', (code, signal) => {
      isClosed = true;
      if (stopping === undefined) exitInfo = `${opts.name} exited unexpectedly (code ${code}, signal ${signal}): ${tail.trim().slice(-2000)}`;
      resolve();
    }),
  );
  const spawned = new Promise<Error | undefined>((resolve) => {
    child.once('spawn', () => resolve(undefined));
    child.once('error', (err) => resolve(err));
  });
  const spawnError = await spawned;
  if (spawnError !== undefined || child.pid === undefined) throw spawnError ?? new Error(`${opts.name}: spawn failed`);
  const pid = child.pid;
  const group = opts.group === true;
  opts.onSpawn?.(pid);

  const stop = (o: { signal?: NodeJS.Signals; graceMs?: number } = {}): Promise<void> =>
    (stopping ??= (async () => {
      if (!isClosed) {
        signalPid(pid, o.signal ?? 'SIGTERM', false);
        if (!(await within(closed, o.graceMs ?? opts.graceMs))) {
          signalPid(pid, 'SIGKILL', group);
          if (!(await within(closed, KILL_WAIT_MS))) throw new Error(`${opts.name} pid ${pid} did not exit after SIGKILL`);
        }
      }
      if (group) signalPid(pid, 'SIGKILL', true); // what the child left running in its group
    })());

  const startupFailure = async (): Promise<Error> => {
    const said = await output();
    if (PORT_IN_USE.test(said)) return new PortInUseError(`${opts.name}: port in use: ${said.trim().slice(-2000)}`);
    return new Error(`${opts.name} exited during start-up (code ${child.exitCode}, signal ${child.signalCode}): ${said.trim().slice(-4000)}`);
  };

  let readyAt = 0;
  try {
    const deadline = Date.now() + opts.readyTimeoutMs;
    for (;;) {
      if (isClosed) throw await startupFailure();
      if (await opts.ready().catch(() => false)) {
        readyAt = performance.now();
        break;
      }
      if (Date.now() > deadline) throw new Error(`${opts.name} not ready within ${opts.readyTimeoutMs} ms: ${(await output()).trim().slice(-4000)}`);
      await sleep(opts.pollMs);
    }
    if (opts.settleMs !== undefined) {
      await within(closed, opts.settleMs);
      if (isClosed) throw await startupFailure();
    }
  } catch (err) {
    await stop().catch(() => {});
    throw err;
  }

  return {
    name: opts.name,
    pid,
    process: child,
    readyAt,
    closed,
    running: () => !isClosed,
    output,
    exitInfo: () => exitInfo,
    stop,
  };
}

/**
 * Call `start` with a free port, again with another one (at most PORT_ATTEMPTS times) while it
 * fails with PortInUseError: getFreePort() is racy by nature, other tests pick ports too.
 */
export async function onFreePort<T>(start: (port: number) => Promise<T>): Promise<T> {
  let last: unknown;
  for (let attempt = 0; attempt < PORT_ATTEMPTS; attempt++) {
    try {
      return await start(await getFreePort());
    } catch (err) {
      if (!(err instanceof PortInUseError)) throw err;
      last = err;
    }
  }
  throw new Error(`no free port after ${PORT_ATTEMPTS} attempts`, { cause: last });
}
