import type { IncomingMessage } from 'node:http';
import { LRUCache } from 'lru-cache';
import type { AccelPlan } from '../http/accel.ts';

const MAX_PLANS = 20_000;
/** `/v2/<name>/blobs/<digest>` or `/v2/<name>/manifests/<digest>`: the only URLs a plan can answer. */
const BY_DIGEST = /^\/v2\/.+\/(?:blobs|manifests)\/(sha256:[0-9a-f]{64})$/;

/**
 * What a serving process learned from the main process about requests it can answer alone, keyed
 * by everything the answer depends on: Host (virtual hosts pick upstreams), the URL (name, digest,
 * `?ns=`), the credential and Accept (manifests). Content by digest is immutable, so a plan is
 * right for as long as the object stays cached (`forget`) or, for a credential, the access-check
 * memory the main process gave it (`expiresAt`).
 */
export class Plans {
  private readonly byKey: LRUCache<string, AccelPlan>;
  private readonly keysByDigest = new Map<string, Set<string>>();

  constructor(max = MAX_PLANS) {
    this.byKey = new LRUCache<string, AccelPlan>({
      max,
      dispose: (plan, key) => {
        const keys = this.keysByDigest.get(plan.digest);
        keys?.delete(key);
        if (keys?.size === 0) this.keysByDigest.delete(plan.digest);
      },
    });
  }

  get(key: string, now: number): AccelPlan | undefined {
    const plan = this.byKey.get(key);
    if (plan && plan.expiresAt <= now) {
      this.byKey.delete(key);
      return undefined;
    }
    return plan;
  }

  set(key: string, plan: AccelPlan): void {
    this.byKey.set(key, plan);
    let keys = this.keysByDigest.get(plan.digest);
    if (!keys) this.keysByDigest.set(plan.digest, (keys = new Set()));
    keys.add(key);
  }

  /** The object left the cache: every plan that serves it goes. */
  forget(digest: string): void {
    for (const key of [...(this.keysByDigest.get(digest) ?? [])]) this.byKey.delete(key);
  }

  get size(): number {
    return this.byKey.size;
  }
}

/** The digest a plan-able request asks for, or undefined when no plan can answer it. */
export function digestOfUrl(url: string): string | undefined {
  if (url.length > 2048) return undefined;
  const q = url.indexOf('?');
  return BY_DIGEST.exec(q === -1 ? url : url.slice(0, q))?.[1];
}

/** The plan key of a request, or undefined when no plan can answer it (not a GET or HEAD by digest). */
export function planKey(req: IncomingMessage): string | undefined {
  if ((req.method !== 'GET' && req.method !== 'HEAD') || req.url === undefined || digestOfUrl(req.url) === undefined) return undefined;
  const h = req.headers;
  return `${h.host ?? ''}\n${req.url}\n${h.authorization ?? ''}\n${h.accept ?? ''}`;
}
