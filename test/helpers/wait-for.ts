import { setTimeout as sleep } from 'node:timers/promises';

/**
 * Poll `check` until it gives a value (anything but undefined or false), at most `timeoutMs`, and
 * return that value; past the deadline throw, naming `what`. For state that settles a moment after
 * the response a test awaited (the access log is written when the socket closes): waiting on the
 * condition instead of a fixed sleep is both faster and not flaky on a loaded machine.
 */
export async function waitFor<T>(
  what: string,
  check: () => T | undefined | false | Promise<T | undefined | false>,
  opts: { timeoutMs?: number; intervalMs?: number } = {},
): Promise<T> {
  const timeoutMs = opts.timeoutMs ?? 5_000;
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(opts.intervalMs ?? 5);
  }
}
