import { createHash } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import type { SharedRecords } from '../cluster/shared-records.ts';
import { credentialKey, type ClientCredential } from '../auth/credentials.ts';
import type { Digest } from '../oci/digest.ts';
import { RegistryError } from '../oci/errors.ts';
import { MANIFEST_ACCEPT } from '../oci/media-types.ts';
import type { Logger } from '../observability/logger.ts';
import type { Metrics } from '../observability/metrics.ts';
import type { UpstreamClient } from '../upstream/client.ts';
import { UpstreamStatusError } from '../upstream/upstream-error.ts';

/** The object whose HEAD tells whether a credential may read the repository. */
export type AccessProbe = { blob: Digest } | { manifest: string };

type CheckContext = { upstream: UpstreamClient; repo: string; probe: AccessProbe; cred: ClientCredential };

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

  private readonly records: SharedRecords | undefined;
  private readonly ttlMs: number;

  constructor(opts: { ttlSeconds: number; failClosed: boolean; metrics: Metrics; log: Logger; records?: SharedRecords | undefined }) {
    this.records = opts.records;
    this.ttlMs = Math.max(1, opts.ttlSeconds) * 1000;
    this.failClosed = opts.failClosed;
    this.metrics = opts.metrics;
    this.log = opts.log;
    this.memo = new LRUCache<string, boolean, CheckContext>({
      max: 50_000,
      ttl: this.ttlMs,
      fetchMethod: async (key, _stale, { context }) => this.askOnce(key, context),
    });
  }

  /**
   * Resolve if `cred` may read `probe` (an object in `repo`) upstream;
   * throw UNAUTHORIZED (no client credential), DENIED, or UNAVAILABLE when
   * the upstream cannot be asked and the guard fails closed.
   */
  async check(upstream: UpstreamClient, repo: string, probe: AccessProbe, cred: ClientCredential): Promise<void> {
    const key = [credentialKey(cred), upstream.host, repo].join('\u0000');
    const memoised = this.memo.has(key);
    let allowed: boolean | undefined;
    try {
      allowed = await this.memo.fetch(key, { context: { upstream, repo, probe, cred } });
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

  /** The upstream's answer, unless another node had it asked within the TTL (shared records). */
  private async askOnce(key: string, context: CheckContext): Promise<boolean> {
    const name = `access:${createHash('sha256').update(key).digest('base64url')}`;
    const known = await this.records?.get(name);
    if (known === '1' || known === '0') return known === '1';
    const allowed = await this.ask(context);
    await this.records?.put(name, allowed ? '1' : '0', this.ttlMs);
    return allowed;
  }

  private async ask({ upstream, repo, probe, cred }: CheckContext): Promise<boolean> {
    // Accept every manifest type: without it distribution 2.x answers a manifest HEAD with 400 (schema1 conversion).
    const opts = { auth: cred, accept: MANIFEST_ACCEPT };
    try {
      if ('blob' in probe) await upstream.headBlob(repo, probe.blob, opts);
      else await upstream.headManifest(repo, probe.manifest, opts);
      return true;
    } catch (err) {
      if (err instanceof UpstreamStatusError) {
        const s = err.upstreamStatus;
        if (s === 401 || s === 403 || s === 404) return false;
        throw new Error(`upstream answered ${s} to an access check`);
      }
      // Bad relayed credentials are a definite no; anything else means "could not ask".
      if (err instanceof RegistryError && err.code === 'UNAUTHORIZED') return false;
      throw err;
    }
  }
}
