import { LRUCache } from 'lru-cache';
import { RegistryError } from '../oci/errors.ts';
import { MANIFEST_ACCEPT } from '../oci/media-types.ts';
import type { Logger } from '../observability/logger.ts';
import type { Metrics } from '../observability/metrics.ts';
import type { UpstreamClient } from '../upstream/client.ts';
import { credentialKey, type ClientCredential } from './credentials.ts';

type CheckContext = { upstream: UpstreamClient; repo: string; probePath: string; cred: ClientCredential };

/**
 * Guards content that was fetched with a client's own credential: serving it
 * from cache needs the requester's credential to be accepted upstream for
 * the repository, asked with a cheap HEAD of the object. The yes/no is
 * remembered per credential, upstream and repository for a short while;
 * concurrent checks for the same key share one HEAD.
 */
export class AccessGuard {
  private readonly memo: LRUCache<string, boolean, CheckContext>;
  private readonly failClosed: boolean;
  private readonly metrics: Metrics;
  private readonly log: Logger;

  constructor(opts: { ttlSeconds: number; failClosed: boolean; metrics: Metrics; log: Logger }) {
    this.failClosed = opts.failClosed;
    this.metrics = opts.metrics;
    this.log = opts.log;
    this.memo = new LRUCache<string, boolean, CheckContext>({
      max: 50_000,
      ttl: Math.max(1, opts.ttlSeconds) * 1000,
      fetchMethod: async (_key, _stale, { context }) => this.ask(context),
    });
  }

  /**
   * Resolve if `cred` may read `probePath` (an object in `repo`) upstream;
   * throw UNAUTHORIZED (no client credential), DENIED, or UNAVAILABLE when
   * the upstream cannot be asked and the guard fails closed.
   */
  async check(upstream: UpstreamClient, repo: string, probePath: string, cred: ClientCredential): Promise<void> {
    const key = [credentialKey(cred), upstream.host, repo].join('\u0000');
    const memoised = this.memo.has(key);
    let allowed: boolean | undefined;
    try {
      allowed = await this.memo.fetch(key, { context: { upstream, repo, probePath, cred } });
    } catch (err) {
      this.metrics.accessChecks.inc({ upstream: upstream.host, result: 'unavailable' });
      if (!this.failClosed) {
        this.log.warn({ repo, err: (err as Error).message }, 'access check impossible; serving (failClosed=false)');
        return;
      }
      throw new RegistryError('UNAVAILABLE', { status: 503, message: 'cannot confirm access with the upstream', cause: err });
    }
    this.metrics.accessChecks.inc({ upstream: upstream.host, result: memoised ? 'memo' : allowed ? 'allowed' : 'denied' });
    if (allowed) return;
    if (cred.kind === 'none' || cred.kind === 'user') throw new RegistryError('UNAUTHORIZED');
    throw new RegistryError('DENIED');
  }

  private async ask({ upstream, repo, probePath, cred }: CheckContext): Promise<boolean> {
    let res;
    try {
      // Accept every manifest type: without it distribution 2.x answers a manifest HEAD with 400 (schema1 conversion).
      res = await upstream.request({ method: 'HEAD', path: probePath, repo, auth: cred, accept: MANIFEST_ACCEPT });
    } catch (err) {
      // Bad relayed credentials are a definite no; anything else means "could not ask".
      if (err instanceof RegistryError && err.code === 'UNAUTHORIZED') return false;
      throw err;
    }
    await res.body.dump();
    if (res.status === 200) return true;
    if (res.status === 401 || res.status === 403 || res.status === 404) return false;
    throw new Error(`upstream answered ${res.status} to an access check`);
  }
}
