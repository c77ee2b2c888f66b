// A safety net for fixtures whose children are not in a process group of their own: if the test
// process exits (an uncaught error, the runner's timeout) before stop() ran, SIGKILL what is left.
import { startSupervisedChild, type SupervisedChild, type SupervisedChildOptions } from './supervised-child.ts';

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
 * startSupervisedChild(), with the child's PID remembered from spawn until it has exited: SIGKILLed
 * if this process exits first. A failed start has already stopped the child, so it is forgotten.
 */
export async function startGuardedChild(opts: SupervisedChildOptions): Promise<SupervisedChild> {
  if (!hooked) {
    hooked = true;
    process.once('exit', killLive);
  }
  let spawned: number | undefined;
  try {
    const child = await startSupervisedChild({
      ...opts,
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
