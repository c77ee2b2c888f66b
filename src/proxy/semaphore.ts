import { RegistryError } from '../oci/errors.ts';
import { RETRY_AFTER } from '../oci/headers.ts';

/** At most `limit` holders; others wait in order, up to `timeoutMs`, then get a 503. */
export class Semaphore {
  private active = 0;
  private readonly waiters: Array<() => void> = [];
  private readonly limit: number;
  private readonly timeoutMs: number;

  constructor(limit: number, timeoutMs: number) {
    this.limit = limit;
    this.timeoutMs = timeoutMs;
  }

  async acquire(): Promise<() => void> {
    if (this.active < this.limit) {
      this.active += 1;
      return this.releaser();
    }
    return new Promise((resolve, reject) => {
      const grant = (): void => {
        clearTimeout(timer);
        this.active += 1;
        resolve(this.releaser());
      };
      const timer = setTimeout(() => {
        const i = this.waiters.indexOf(grant);
        if (i >= 0) this.waiters.splice(i, 1);
        reject(new RegistryError('UNAVAILABLE', { status: 503, message: 'too many downloads in progress', headers: { [RETRY_AFTER]: '5' } }));
      }, this.timeoutMs);
      this.waiters.push(grant);
    });
  }

  private releaser(): () => void {
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.active -= 1;
      this.waiters.shift()?.();
    };
  }
}
