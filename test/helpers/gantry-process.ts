import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { answers, onFreePort, startSupervisedChild } from './supervised-child.ts';

export type GantryProcess = {
  url: string;
  pid: number;
  child: ChildProcess;
  /** What the process wrote to stderr so far (an uncaught error's stack lands here). */
  stderr(): Promise<string>;
  kill(signal?: NodeJS.Signals): Promise<void>;
};

/**
 * Run Gantry as a real process (`bin/gantry`), so tests can kill -9 it.
 * Resolves once /healthz answers; bounded by a deadline. `logFile` collects stdout (the logs) and stderr.
 * `env` may depend on the port chosen (a cluster node advertises its own URL).
 */
export async function startGantryProcess(
  env: Record<string, string> | ((port: number) => Record<string, string>),
  args: string[] = [],
  opts: { logFile?: string } = {},
): Promise<GantryProcess> {
  const { url, proc } = await onFreePort(async (port) => {
    const extra = typeof env === 'function' ? env(port) : env;
    const url = `http://127.0.0.1:${port}`;
    const proc = await startSupervisedChild({
      name: 'gantry',
      // bin/gantry, as npm start and deploy/ launch it, with this process's Node.
      command: 'bin/gantry',
      args,
      env: { ...process.env, GANTRY_NODE: process.execPath, GANTRY_LISTEN: `127.0.0.1:${port}`, GANTRY_LOG_LEVEL: 'warn', ...extra },
      // Gantry logs to stdout: with a logFile, both streams go there for the test to read; else only stderr is kept.
      ...(opts.logFile !== undefined ? { logFile: opts.logFile } : { capture: 'stderr' as const }),
      ready: () => answers(`${url}/healthz`, (s) => s >= 200 && s < 300),
      readyTimeoutMs: 10_000,
      pollMs: 50,
      settleMs: 50,
      graceMs: 10_000,
    });
    return { url, proc };
  });
  return { url, pid: proc.pid, child: proc.process, stderr: () => proc.output(), kill: (signal: NodeJS.Signals = 'SIGKILL') => proc.stop({ signal }) };
}

export type GantryRun = { code: number | null; stdout: string; stderr: string };

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

/**
 * Run one `bin/gantry` command as a user does (GANTRY_CONFIG from the test's environment left
 * out) and collect its output; bounded in time, stopped by its PID if it overstays.
 */
export function runGantry(args: string[], timeoutMs = 60_000): Promise<GantryRun> {
  const { GANTRY_CONFIG: _, ...env } = process.env;
  const child = spawn(path.join(ROOT, 'bin', 'gantry'), args, { env: { ...env, GANTRY_NODE: process.execPath }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
  const timer = setTimeout(() => child.pid !== undefined && process.kill(child.pid, 'SIGKILL'), timeoutMs);
  return new Promise((resolve) => child.on('close', (code) => {
    clearTimeout(timer);
    resolve({ code, stdout, stderr });
  }));
}
