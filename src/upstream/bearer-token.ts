import { LRUCache } from 'lru-cache';
import { request, type Dispatcher } from 'undici';

/** A parsed `WWW-Authenticate` challenge (RFC 7235), as registries send it. */
export type Challenge = { scheme: string; params: Record<string, string> };

/**
 * Parse the first challenge of a WWW-Authenticate header (RFC 7235); undefined
 * if malformed. Parameters are read in sequence and parsing stops where a
 * second challenge (`, Scheme param=...`) begins.
 */
export function parseChallenge(header: string | undefined): Challenge | undefined {
  if (!header) return undefined;
  const m = /^\s*([A-Za-z][A-Za-z0-9._-]*)(?:\s+|$)/.exec(header);
  if (!m?.[1]) return undefined;
  const params: Record<string, string> = {};
  const re = /\s*([A-Za-z][A-Za-z0-9_-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))\s*(?:,|$)/y;
  re.lastIndex = m[0].length;
  for (let p = re.exec(header); p; p = re.exec(header)) {
    if (p[1]) params[p[1].toLowerCase()] = (p[2] ?? p[3] ?? '').replace(/\\(.)/g, '$1');
    if (re.lastIndex >= header.length) break;
  }
  return { scheme: m[1].toLowerCase(), params };
}

/** Second-level labels under which registrations happen one level deeper (co.uk, com.au, ...). */
const GENERIC_SLDS = new Set(['co', 'com', 'net', 'org', 'gov', 'ac', 'edu', 'ne', 'or', 'go']);

/**
 * The registrable domain of a host: its last two labels (docker.io for
 * registry-1.docker.io and auth.docker.io), or three under a two-letter
 * country code with a generic second level (example.co.uk). IP addresses and
 * single-label hosts are their own domain. An approximation of the public
 * suffix list; `realmHosts` in the config covers anything it gets wrong.
 */
export function registrableDomain(hostname: string): string {
  const h = hostname.toLowerCase().replace(/^\[|\]$/g, '');
  if (/^[\d.]+$/.test(h) || h.includes(':')) return h;
  const labels = h.split('.');
  const tld = labels.at(-1) ?? '';
  const sld = labels.at(-2) ?? '';
  const keep = tld.length === 2 && GENERIC_SLDS.has(sld) ? 3 : 2;
  return labels.slice(-keep).join('.');
}

/**
 * A bearer realm may receive credentials only if it is on the upstream's own
 * registrable domain, or explicitly allowed (distribution's realmAllowed idea),
 * and never over plain HTTP when the upstream itself is HTTPS.
 */
export function isRealmAllowed(realm: string, upstreamUrl: string, extraHosts: readonly string[] = []): boolean {
  let r: URL;
  try {
    r = new URL(realm);
  } catch {
    return false;
  }
  if (r.protocol !== 'https:' && r.protocol !== 'http:') return false;
  const u = new URL(upstreamUrl);
  if (u.protocol === 'https:' && r.protocol !== 'https:') return false;
  if (extraHosts.includes(r.host.toLowerCase())) return true;
  return registrableDomain(r.hostname) === registrableDomain(u.hostname);
}

type TokenResponse = { token?: unknown; access_token?: unknown; expires_in?: unknown };

const DEFAULT_TOKEN_TTL_S = 60;
const TOKEN_REFRESH_SKEW_S = 10;

type TokenContext = { challenge: Challenge; scope: string; basicAuth: string | undefined };

/**
 * Bearer tokens from upstream realms, cached per realm/service/scope and per
 * credential (Gantry's own, or a client's relayed one) until shortly before
 * they expire. lru-cache's fetch() coalesces concurrent requests for the same
 * key into one token request.
 */
export class TokenCache {
  private readonly cache: LRUCache<string, string, TokenContext>;

  constructor(opts: { dispatcher: Dispatcher; timeoutMs: number }) {
    this.cache = new LRUCache<string, string, TokenContext>({
      max: 10_000,
      ttl: DEFAULT_TOKEN_TTL_S * 1000,
      fetchMethod: async (_key, _stale, { context, options, signal }) => {
        const { token, ttlS } = await fetchToken(context, { dispatcher: opts.dispatcher, timeoutMs: opts.timeoutMs }, signal);
        options.ttl = Math.max(1, ttlS - TOKEN_REFRESH_SKEW_S) * 1000;
        return token;
      },
    });
  }

  /** `credKey` identifies `basicAuth` without holding the secret in the key. */
  async get(challenge: Challenge, scope: string, basicAuth: string | undefined, credKey: string): Promise<string> {
    const key = [challenge.params['realm'], challenge.params['service'] ?? '', scope, credKey].join('\u0000');
    const token = await this.cache.fetch(key, { context: { challenge, scope, basicAuth } });
    if (!token) throw new Error('token endpoint returned no token');
    return token;
  }
}

async function fetchToken(
  { challenge, scope, basicAuth }: TokenContext,
  opts: { dispatcher: Dispatcher; timeoutMs: number },
  signal: AbortSignal,
): Promise<{ token: string; ttlS: number }> {
  const url = new URL(challenge.params['realm'] ?? '');
  if (challenge.params['service']) url.searchParams.set('service', challenge.params['service']);
  if (scope) url.searchParams.set('scope', scope);
  const headers: Record<string, string> = { accept: 'application/json' };
  if (basicAuth) headers['authorization'] = basicAuth;
  const res = await request(url, {
    dispatcher: opts.dispatcher,
    headers,
    signal: AbortSignal.any([signal, AbortSignal.timeout(opts.timeoutMs)]),
  });
  if (res.statusCode !== 200) {
    await res.body.dump();
    throw new TokenError(res.statusCode);
  }
  const body = (await res.body.json()) as TokenResponse;
  const token = typeof body.token === 'string' ? body.token : typeof body.access_token === 'string' ? body.access_token : undefined;
  if (!token) throw new TokenError(502);
  const ttlS = typeof body.expires_in === 'number' && body.expires_in > 0 ? body.expires_in : DEFAULT_TOKEN_TTL_S;
  return { token, ttlS };
}

export class TokenError extends Error {
  readonly status: number;
  constructor(status: number) {
    super(`token endpoint answered ${status}`);
    this.name = 'TokenError';
    this.status = status;
  }
}
