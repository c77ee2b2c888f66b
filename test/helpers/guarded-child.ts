// Children that must not outlive the test process. stop() ends them by PID; this covers the test
// process ending first: killed by a signal (node:test's runner sends SIGTERM on a timeout, which
// fires no 'exit' event) or dying on an uncaught error.
import { existsSync } from 'node:fs';
import { startSupervisedChild, type SupervisedChild, type SupervisedChildOptions } from './supervised-child.ts';

// util-linux (Essential in Debian): exec()s the command with PR_SET_PDEATHSIG, so the PID is the
// command's own and the kernel SIGKILLs it when the test process dies, however it dies. Lost if
// the command changes its user (memcached -u).
const SETPRIV = '/usr/bin/setpriv';

const live = new Set<number>();
let hooked = false;

function killLive(): void {
  for (const pid of live) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  live.clear();
}

/**
 * startSupervisedChild(), under a parent-death signal where setpriv exists, and with the child's
 * PID remembered from spawn until it has exited: SIGKILLed on this process's 'exit' too (no
 * setpriv). A failed start has already stopped the child, so it is forgotten.
 */
export async function startGuardedChild(opts: SupervisedChildOptions): Promise<SupervisedChild> {
  if (!hooked) {
    hooked = true;
    process.once('exit', killLive);
  }
  const wrapped = existsSync(SETPRIV)
    ? { command: SETPRIV, args: ['--pdeathsig', 'KILL', '--', opts.command, ...(opts.args ?? [])] }
    : { command: opts.command, args: opts.args ?? [] };
  let spawned: number | undefined;
  try {
    const child = await startSupervisedChild({
      ...opts,
      ...wrapped,
      onSpawn: (pid) => {
        spawned = pid;
        live.add(pid);
        opts.onSpawn?.(pid);
      },
    });
    void child.closed.then(() => live.delete(child.pid));
    return child;
  } catch (err) {
    if (spawned !== undefined) live.delete(spawned);
    throw err;
  }
}
