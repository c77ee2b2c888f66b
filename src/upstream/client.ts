import { Agent, EnvHttpProxyAgent, request, type Dispatcher } from 'undici';
import type { UpstreamConfig } from '../config/config.ts';
import type { Logger } from '../observability/logger.ts';
import type { Metrics } from '../observability/metrics.ts';
import { isRealmAllowed, parseChallenge, TokenCache, type Challenge } from './auth.ts';
import { upstreamNetworkError } from './upstream-error.ts';

const MAX_REDIRECTS = 5;
const REDIRECT_STATUSES = new Set([301, 302, 303, 307, 308]);

export type UpstreamRequest = {
  method: 'GET' | 'HEAD';
  /** Path and query under the upstream URL, e.g. `/v2/library/alpine/manifests/latest`. */
  path: string;
  /** Repository as the upstream knows it; used for the token scope. */
  repo: string;
  accept?: string | undefined;
  range?: string | undefined;
  /** The client's own Authorization header: passed through as-is (token passthrough). */
  clientAuth?: string | undefined;
  signal?: AbortSignal | undefined;
};

export type UpstreamResponse = {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Dispatcher.ResponseData['body'];
};

export type UpstreamClientOptions = {
  config: UpstreamConfig;
  headersTimeoutMs: number;
  bodyTimeoutMs: number;
  metrics: Metrics;
  log: Logger;
  /** For tests: inject a dispatcher. */
  dispatcher?: Dispatcher;
};

/**
 * One configured upstream registry: its connection pool, its auth state, and
 * request() which does anonymous/configured-credential token dances and
 * follows redirects without leaking Authorization to other origins.
 */
export class UpstreamClient {
  readonly host: string;
  readonly url: string;
  readonly config: UpstreamConfig;
  private readonly dispatcher: Dispatcher;
  private readonly tokens: TokenCache;
  private readonly basicAuth: string | undefined;
  private readonly metrics: Metrics;
  private readonly log: Logger;
  private readonly headersTimeoutMs: number;
  /** The last challenge this upstream sent, so later requests can fetch a token up front. */
  private challenge: Challenge | undefined;

  constructor(opts: UpstreamClientOptions) {
    this.config = opts.config;
    this.host = opts.config.host;
    this.url = opts.config.url;
    this.metrics = opts.metrics;
    this.log = opts.log;
    this.headersTimeoutMs = opts.headersTimeoutMs;
    const agentOpts = {
      headersTimeout: opts.headersTimeoutMs,
      bodyTimeout: opts.bodyTimeoutMs,
      connectTimeout: Math.min(opts.headersTimeoutMs, 10_000),
      keepAliveTimeout: 30_000,
    };
    // Branch offices often sit behind a corporate proxy: honour HTTP(S)_PROXY / NO_PROXY when set.
    const proxied = ['HTTPS_PROXY', 'https_proxy', 'HTTP_PROXY', 'http_proxy'].some((k) => process.env[k]);
    this.dispatcher = opts.dispatcher ?? (proxied ? new EnvHttpProxyAgent(agentOpts) : new Agent(agentOpts));
    this.basicAuth =
      opts.config.username !== undefined && opts.config.password !== undefined
        ? `Basic ${Buffer.from(`${opts.config.username}:${opts.config.password}`).toString('base64')}`
        : undefined;
    this.tokens = new TokenCache({ dispatcher: this.dispatcher, basicAuth: this.basicAuth, timeoutMs: opts.headersTimeoutMs });
  }

  async close(): Promise<void> {
    await this.dispatcher.close();
  }

  /**
   * Send a request upstream. Without a client credential, Gantry authenticates
   * itself (anonymous token, or the configured credentials) and retries once on
   * a 401. With one, the 401 goes back to the caller so the client can log in.
   */
  async request(req: UpstreamRequest): Promise<UpstreamResponse> {
    const scope = `repository:${req.repo}:pull`;
    let auth = req.clientAuth ?? (await this.ownAuth(scope, req.signal));
    let res = await this.send(req, auth);
    if (res.status === 401 && req.clientAuth === undefined) {
      const challenge = parseChallenge(headerString(res.headers['www-authenticate']));
      if (challenge && (challenge.scheme === 'bearer' || challenge.scheme === 'basic')) {
        this.challenge = challenge;
        const retryAuth = await this.ownAuth(challenge.params['scope'] ?? scope, req.signal);
        if (retryAuth !== undefined && retryAuth !== auth) {
          await res.body.dump();
          auth = retryAuth;
          res = await this.send(req, auth);
        }
      }
    }
    return res;
  }

  /** The Authorization Gantry itself would use for a scope, given the known challenge. */
  private async ownAuth(scope: string, signal?: AbortSignal): Promise<string | undefined> {
    const ch = this.challenge;
    if (!ch) return undefined;
    if (ch.scheme === 'basic') return this.basicAuth;
    const realm = ch.params['realm'];
    if (!realm || !isRealmAllowed(realm, this.url)) {
      this.log.warn({ upstream: this.host, realm: realm ? safeOrigin(realm) : undefined }, 'bearer realm not allowed; not requesting a token');
      return undefined;
    }
    try {
      signal?.throwIfAborted();
      return `Bearer ${await this.tokens.get(ch, scope)}`;
    } catch (err) {
      this.log.warn({ upstream: this.host, scope, err: (err as Error).message }, 'token request failed');
      return undefined;
    }
  }

  /** One logical request, following redirects; Authorization only goes to the upstream's own origin. */
  private async send(req: UpstreamRequest, auth: string | undefined): Promise<UpstreamResponse> {
    let url = new URL(this.url + req.path);
    const origin = url.origin;
    for (let hop = 0; ; hop++) {
      const headers: Record<string, string> = { 'user-agent': 'gantry/0.1' };
      if (req.accept) headers['accept'] = req.accept;
      if (req.range) headers['range'] = req.range;
      if (auth && url.origin === origin) headers['authorization'] = auth;
      const started = performance.now();
      let res: Dispatcher.ResponseData;
      try {
        res = await request(url, {
          method: req.method,
          headers,
          dispatcher: this.dispatcher,
          signal: req.signal ?? null,
        });
      } catch (err) {
        this.metrics.upstreamRequests.inc({ upstream: this.host, method: req.method, status: '0' });
        throw upstreamNetworkError(err);
      }
      this.metrics.upstreamDuration.observe({ upstream: this.host, method: req.method }, (performance.now() - started) / 1000);
      this.metrics.upstreamRequests.inc({ upstream: this.host, method: req.method, status: String(res.statusCode) });
      const location = headerString(res.headers['location']);
      if (REDIRECT_STATUSES.has(res.statusCode) && location && hop < MAX_REDIRECTS) {
        await res.body.dump();
        url = new URL(location, url);
        continue;
      }
      return { status: res.statusCode, headers: res.headers, body: res.body };
    }
  }
}

export function headerString(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v[0] : v;
}

/** Never log a URL's query (tokens ride there on some CDNs). */
function safeOrigin(u: string): string {
  try {
    return new URL(u).origin;
  } catch {
    return '[invalid url]';
  }
}
