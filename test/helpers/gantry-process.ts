import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import { getFreePort } from './free-port.ts';

export type GantryProcess = {
  url: string;
  pid: number;
  child: ChildProcess;
  /** What the process wrote to stderr so far (an uncaught error's stack lands here). */
  stderr(): string;
  kill(signal?: NodeJS.Signals): Promise<void>;
};

/**
 * Run Gantry as a real process (`bin/gantry`), so tests can kill -9 it.
 * Resolves once /healthz answers; bounded by a deadline.
 */
export async function startGantryProcess(env: Record<string, string>, args: string[] = []): Promise<GantryProcess> {
  const port = await getFreePort();
  // bin/gantry, as npm start and deploy/ launch it, with this process's Node.
  const child = spawn('bin/gantry', args, {
    env: { ...process.env, GANTRY_NODE: process.execPath, GANTRY_LISTEN: `127.0.0.1:${port}`, GANTRY_LOG_LEVEL: 'warn', ...env },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr?.on('data', (c: Buffer) => (stderr += c.toString()));
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 10_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`gantry exited early (${child.exitCode}): ${stderr}`);
    try {
      if ((await fetch(`${url}/healthz`)).ok) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`gantry did not start within 10 s: ${stderr}`);
    }
    await sleep(50);
  }
  return {
    url,
    pid: child.pid ?? 0,
    child,
    stderr: () => stderr,
    async kill(signal: NodeJS.Signals = 'SIGKILL') {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = once(child, 'exit');
      child.kill(signal);
      await exited;
    },
  };
}
