import { Agent, EnvHttpProxyAgent, request, type Dispatcher } from 'undici';
import { credentialKey, type ClientCredential } from '../auth/credentials.ts';
import type { BreakerConfig, ProxyConfig, UpstreamConfig } from '../config/config.ts';
import { RegistryError } from '../oci/errors.ts';
import type { Logger } from '../observability/logger.ts';
import type { Metrics } from '../observability/metrics.ts';
import type { Digest } from '../oci/digest.ts';
import { RETRY_AFTER, WWW_AUTHENTICATE } from '../oci/headers.ts';
import { isRealmAllowed, parseChallenge, TokenCache, TokenError, type Challenge } from './bearer-token.ts';
import { CircuitBreaker, isOutageStatus, type BreakerTransition } from './breaker.ts';
import {
  blobPath, contentLength, expectStatus, headerString, isResumeOf, listingHeaders, manifestHead, manifestPath, referrersPath, tagsPath,
  type BlobHead, type BlobResponse, type ListingResponse, type ManifestHead, type ManifestResponse, type UpstreamResponse,
} from './registry-api.ts';
import { ByteRateLimiter, throttled, type TransferPriority } from './rate-limiter.ts';
import { upstreamNetworkError } from './upstream-error.ts';

const MAX_REDIRECTS = 5;
const USER_AGENT = 'gantry/0.1';
const WWW_AUTHENTICATE_LC = WWW_AUTHENTICATE.toLowerCase();
const REDIRECT_STATUSES = new Set([301, 302, 303, 307, 308]);

type UpstreamRequest = {
  method: 'GET' | 'HEAD';
  /** Path and query under the upstream URL, e.g. `/v2/library/alpine/manifests/latest`. */
  path: string;
  /** Repository as the upstream knows it; used for the token scope. */
  repo: string;
  accept?: string | undefined;
  range?: string | undefined;
  /** Who the request speaks for (see ClientCredential). */
  auth: ClientCredential;
  signal?: AbortSignal | undefined;
};

/** Who a call speaks for, and a signal to give up on it. */
export type CallOptions = { auth: ClientCredential; signal?: AbortSignal | undefined };

export type UpstreamClientOptions = {
  config: UpstreamConfig;
  headersTimeoutMs: number;
  bodyTimeoutMs: number;
  breaker: BreakerConfig;
  proxy: ProxyConfig;
  metrics: Metrics;
  log: Logger;
  /** The limit shared by every upstream (`upstreamMaxBytesPerSecond`), if one is set. */
  sharedLimiter?: ByteRateLimiter | undefined;
  /** For tests: inject a dispatcher. */
  dispatcher?: Dispatcher;
};

/**
 * One configured upstream registry: its connection pool, auth state, circuit
 * breaker, and the registry API calls (getBlob, getManifest, listTags...),
 * which return typed, status-checked answers. Every call goes through
 * request(), which authenticates (Gantry's own token dance, a
 * client's relayed credentials, or a client token passed through) and follows
 * redirects without leaking Authorization to other origins.
 */
export class UpstreamClient {
  readonly host: string;
  readonly url: string;
  readonly config: UpstreamConfig;
  readonly breaker: CircuitBreaker;
  /** Bandwidth limits that apply to this upstream's blob bodies (global, own); empty: unlimited. */
  private readonly limiters: ByteRateLimiter[];
  private readonly dispatcher: Dispatcher;
  private readonly tokens: TokenCache;
  private readonly ownBasic: string | undefined;
  private readonly metrics: Metrics;
  private readonly log: Logger;
  /** The last challenge this upstream sent, so later requests can fetch a token up front. */
  private challenge: Challenge | undefined;
  /** Set once the upstream answered `GET /v2/` without a challenge: it needs no auth. */
  private openAccess = false;

  constructor(opts: UpstreamClientOptions) {
    this.config = opts.config;
    this.host = opts.config.host;
    this.url = opts.config.url;
    this.metrics = opts.metrics;
    this.log = opts.log.child({ upstream: this.host });
    const own = opts.config.maxBytesPerSecond ? createLimiter(opts.config.maxBytesPerSecond, this.host, opts.metrics) : undefined;
    this.limiters = [opts.sharedLimiter, own].filter((l): l is ByteRateLimiter => l !== undefined);
    const agentOpts = {
      headersTimeout: opts.headersTimeoutMs,
      bodyTimeout: opts.bodyTimeoutMs,
      connectTimeout: Math.min(opts.headersTimeoutMs, 10_000),
      keepAliveTimeout: 30_000,
    };
    // Branch offices often sit behind a corporate proxy.
    const { httpProxy, httpsProxy, noProxy } = opts.proxy;
    this.dispatcher =
      opts.dispatcher ??
      (httpProxy || httpsProxy
        ? new EnvHttpProxyAgent({ ...agentOpts, ...(httpProxy ? { httpProxy } : {}), ...(httpsProxy ? { httpsProxy } : {}), ...(noProxy ? { noProxy } : {}) })
        : new Agent(agentOpts));
    const { username, password } = opts.config;
    this.ownBasic = username !== undefined && password !== undefined ? `Basic ${Buffer.from(`${username}:${password}`).toString('base64')}` : undefined;
    this.tokens = new TokenCache({ dispatcher: this.dispatcher, timeoutMs: opts.headersTimeoutMs });
    const b = opts.breaker;
    this.breaker = new CircuitBreaker({
      threshold: b.failureThreshold,
      cooldownMs: b.cooldownSeconds * 1000,
      trialTimeoutMs: b.trialTimeoutSeconds * 1000,
      probeIntervalMs: b.probeIntervalSeconds * 1000,
      probe: (signal) => this.probe(signal),
      onChange: (t) => this.circuitChanged(t),
    });
    this.metrics.upstreamUp.set({ upstream: this.host }, 1);
  }

  /** A blob body paced by the bandwidth limits (the same iterable when there are none: nothing on the hot path). */
  throttle(body: AsyncIterable<Uint8Array>, priority: () => TransferPriority): AsyncIterable<Uint8Array> {
    return this.limiters.length === 0 ? body : throttled(body, this.limiters, priority);
  }

  async close(): Promise<void> {
    this.breaker.stop();
    await this.dispatcher.close();
  }

  /**
   * The breaker's probe while the upstream is marked down: `GET /v2/`, no
   * credentials, no redirects. Any HTTP answer below 500 (401 included) means
   * the registry is back; a 500 to `/v2/` itself means it is not.
   */
  private async probe(signal: AbortSignal): Promise<boolean> {
    let status = 0;
    try {
      const res = await request(new URL(this.url + '/v2/'), { method: 'GET', headers: { 'user-agent': USER_AGENT }, dispatcher: this.dispatcher, signal });
      status = res.statusCode;
      await res.body.dump();
    } catch {
      // refused, reset, timed out: still down
    }
    const up = status > 0 && status < 500;
    this.metrics.upstreamProbes.inc({ upstream: this.host, result: up ? 'up' : 'down' });
    return up;
  }

  /** One log line and one counted transition per change; `gantry_upstream_up` is 1 only while closed. */
  private circuitChanged(t: BreakerTransition): void {
    this.metrics.upstreamUp.set({ upstream: this.host }, t.to === 'closed' ? 1 : 0);
    this.metrics.upstreamTransitions.inc({ upstream: this.host, to: t.to });
    const fields = { from: t.from, to: t.to, reason: t.reason };
    if (t.to === 'closed') {
      this.log.warn({ ...fields, downForMs: t.downForMs }, 'upstream is back up; circuit closed');
    } else if (t.from === 'closed') {
      this.log.error({ ...fields, retryAfterMs: this.breaker.retryAfterMs() }, 'upstream marked down; serving from cache only');
    } else {
      this.log.warn(fields, t.to === 'half-open' ? 'upstream trial request let through' : 'upstream still down');
    }
  }

  /** A blob's bytes, from `offset` on (a Range request, checked against Content-Range) when resuming. */
  async getBlob(repo: string, digest: Digest, opts: CallOptions & { offset?: number }): Promise<BlobResponse> {
    const offset = opts.offset ?? 0;
    const res = await this.request({
      method: 'GET', path: blobPath(repo, digest), repo, auth: opts.auth, signal: opts.signal,
      ...(offset > 0 ? { range: `bytes=${offset}-` } : {}),
    });
    await expectStatus('blob', res, offset > 0 ? 206 : 200, 'GET');
    if (offset > 0 && !isResumeOf(res.headers, offset)) {
      res.body.destroy();
      throw new Error('upstream answered the resume with the wrong range');
    }
    return { size: contentLength(res.headers), body: res.body };
  }

  async headBlob(repo: string, digest: Digest, opts: CallOptions & { accept?: string | undefined }): Promise<BlobHead> {
    const res = await this.request({ method: 'HEAD', path: blobPath(repo, digest), repo, accept: opts.accept, auth: opts.auth, signal: opts.signal });
    await res.body.dump();
    await expectStatus('blob', res, 200, 'HEAD');
    return { size: contentLength(res.headers) };
  }

  async getManifest(repo: string, reference: string, opts: CallOptions & { accept: string }): Promise<ManifestResponse> {
    const res = await this.request({ method: 'GET', path: manifestPath(repo, reference), repo, accept: opts.accept, auth: opts.auth, signal: opts.signal });
    await expectStatus('manifest', res, 200, 'GET');
    return { ...manifestHead(res.headers), body: res.body };
  }

  async headManifest(repo: string, reference: string, opts: CallOptions & { accept: string }): Promise<ManifestHead> {
    const res = await this.request({ method: 'HEAD', path: manifestPath(repo, reference), repo, accept: opts.accept, auth: opts.auth, signal: opts.signal });
    await res.body.dump();
    await expectStatus('manifest', res, 200, 'HEAD');
    return manifestHead(res.headers);
  }

  async listTags(repo: string, opts: CallOptions & { n?: string | undefined; last?: string | undefined; accept?: string | undefined }): Promise<ListingResponse> {
    const res = await this.request({ method: 'GET', path: tagsPath(repo, opts), repo, accept: opts.accept, auth: opts.auth, signal: opts.signal });
    await expectStatus('tags', res, 200, 'GET');
    return { headers: listingHeaders(res.headers), body: res.body };
  }

  async getReferrers(repo: string, digest: Digest, opts: CallOptions & { artifactType?: string | undefined; accept?: string | undefined }): Promise<ListingResponse> {
    const res = await this.request({ method: 'GET', path: referrersPath(repo, digest, opts.artifactType), repo, accept: opts.accept, auth: opts.auth, signal: opts.signal });
    await expectStatus('referrers', res, 200, 'GET');
    return { headers: listingHeaders(res.headers), body: res.body };
  }

  /**
   * A login check: `GET /v2/` with the client's credential, scoped to `repo`
   * (empty: no scope). False only when the upstream refuses the credential.
   */
  async acceptsCredential(repo: string, auth: ClientCredential): Promise<boolean> {
    const res = await this.request({ method: 'GET', path: '/v2/', repo, auth });
    await res.body.dump();
    return res.status !== 401 && res.status !== 403;
  }

  /**
   * Send a request upstream on behalf of `req.auth`. Gantry's own auth
   * (anonymous / configured credentials) retries once after a 401 with a fresh
   * token; a client's passed-through token gets the 401 back; a client's
   * relayed credentials are exchanged for a token scoped to the upstream repo.
   */
  private async request(req: UpstreamRequest): Promise<UpstreamResponse> {
    // No repository (a login check against /v2/): ask the realm for a token without a scope.
    const scope = req.repo ? `repository:${req.repo}:pull` : '';
    switch (req.auth.kind) {
      case 'bearer':
        return this.send(req, req.auth.header);
      case 'basic':
        return this.send(req, await this.relayAuth(req.auth.header, credentialKey(req.auth), scope, req.signal));
      case 'none':
      case 'user':
        break;
    }
    const auth = await this.ownAuth(scope);
    const res = await this.send(req, auth);
    if (res.status !== 401 || this.config.token !== undefined) return res;
    const challenge = parseChallenge(headerString(res.headers[WWW_AUTHENTICATE_LC]));
    if (!challenge || (challenge.scheme !== 'bearer' && challenge.scheme !== 'basic')) return res;
    this.challenge = challenge;
    const retryAuth = await this.ownAuth(challenge.params['scope'] ?? scope);
    if (retryAuth === undefined || retryAuth === auth) return res;
    await res.body.dump();
    return this.send(req, retryAuth);
  }

  /** The Authorization Gantry itself uses for a scope, given the upstream's known challenge. */
  private async ownAuth(scope: string): Promise<string | undefined> {
    if (this.config.token !== undefined) return `Bearer ${this.config.token}`;
    const ch = this.challenge;
    if (!ch) return undefined;
    if (ch.scheme === 'basic') return this.ownBasic;
    try {
      return await this.bearerFor(ch, scope, this.ownBasic, 'gantry');
    } catch (err) {
      this.log.warn({ scope, err: (err as Error).message }, 'token request failed');
      return undefined;
    }
  }

  /**
   * Exchange a client's upstream credentials for what the upstream wants:
   * a bearer token from its realm (scoped to the upstream's own repository
   * name), or the Basic header itself. Bad credentials are a 401 to the client.
   */
  private async relayAuth(basic: string, credKey: string, scope: string, signal?: AbortSignal): Promise<string | undefined> {
    const ch = this.challenge ?? (await this.learnChallenge(signal));
    if (!ch) return undefined;
    if (ch.scheme === 'basic') return basic;
    try {
      return await this.bearerFor(ch, scope, basic, credKey);
    } catch (err) {
      if (err instanceof TokenError && (err.status === 401 || err.status === 403)) {
        throw new RegistryError('UNAUTHORIZED', { message: 'the upstream refused these credentials' });
      }
      throw new RegistryError('UNAVAILABLE', { status: 502, message: 'upstream token endpoint failed', cause: err });
    }
  }

  private async bearerFor(ch: Challenge, scope: string, basic: string | undefined, credKey: string): Promise<string> {
    const realm = ch.params['realm'];
    if (!realm || !isRealmAllowed(realm, this.url, this.config.realmHosts)) {
      this.log.warn({ realm: realm ? safeOrigin(realm) : undefined }, 'bearer realm not allowed; not requesting a token');
      throw new Error('bearer realm not allowed');
    }
    return `Bearer ${await this.tokens.get(ch, scope, basic, credKey)}`;
  }

  /** Ask `GET /v2/` which auth scheme the upstream wants (done once, then remembered). */
  private async learnChallenge(signal?: AbortSignal): Promise<Challenge | undefined> {
    if (this.openAccess) return undefined;
    const res = await this.send({ method: 'GET', path: '/v2/', repo: '', auth: { kind: 'none' }, signal }, undefined);
    await res.body.dump();
    const ch = parseChallenge(headerString(res.headers[WWW_AUTHENTICATE_LC]));
    if (res.status === 401 && ch) this.challenge = ch;
    else if (res.status === 200) this.openAccess = true;
    return this.challenge;
  }

  /** One logical request, following redirects; Authorization only goes to the upstream's own origin. */
  private async send(req: UpstreamRequest, auth: string | undefined): Promise<UpstreamResponse> {
    if (!this.breaker.allow()) {
      throw new RegistryError('UNAVAILABLE', {
        status: 503,
        message: 'upstream marked down after repeated failures',
        headers: { [RETRY_AFTER]: String(Math.max(1, Math.ceil(this.breaker.retryAfterMs() / 1000))) },
      });
    }
    let url = new URL(this.url + req.path);
    const origin = url.origin;
    for (let hop = 0; ; hop++) {
      const headers: Record<string, string> = { 'user-agent': USER_AGENT };
      if (req.accept) headers['accept'] = req.accept;
      if (req.range) headers['range'] = req.range;
      if (auth && url.origin === origin) headers['authorization'] = auth;
      const started = performance.now();
      let res: Dispatcher.ResponseData;
      try {
        res = await request(url, { method: req.method, headers, dispatcher: this.dispatcher, signal: req.signal ?? null });
      } catch (err) {
        this.metrics.upstreamRequests.inc({ upstream: this.host, method: req.method, status: '0' });
        // Our own abort (shutdown, a fill's deadline) says nothing about the upstream.
        if (!req.signal?.aborted) this.breaker.failure();
        throw upstreamNetworkError(err);
      }
      this.metrics.upstreamDuration.observe({ upstream: this.host, method: req.method }, (performance.now() - started) / 1000);
      this.metrics.upstreamRequests.inc({ upstream: this.host, method: req.method, status: String(res.statusCode) });
      if (isOutageStatus(res.statusCode)) this.breaker.failure();
      else this.breaker.success();
      this.recordRateLimit(res.headers);
      const location = headerString(res.headers['location']);
      if (REDIRECT_STATUSES.has(res.statusCode) && location && hop < MAX_REDIRECTS) {
        await res.body.dump();
        url = new URL(location, url);
        continue;
      }
      return { status: res.statusCode, headers: res.headers, body: res.body };
    }
  }

  /** Docker Hub's `ratelimit-limit: 100;w=21600` / `ratelimit-remaining: 76;w=21600`. */
  private recordRateLimit(headers: Record<string, string | string[] | undefined>): void {
    const limit = parseInt(headerString(headers['ratelimit-limit']) ?? '', 10);
    const remaining = parseInt(headerString(headers['ratelimit-remaining']) ?? '', 10);
    if (Number.isFinite(limit)) this.metrics.ratelimitLimit.set({ upstream: this.host }, limit);
    if (Number.isFinite(remaining)) this.metrics.ratelimitRemaining.set({ upstream: this.host }, remaining);
  }
}

/** Never log a URL's query (tokens ride there on some CDNs). */
function safeOrigin(u: string): string {
  try {
    return new URL(u).origin;
  } catch {
    return '[invalid url]';
  }
}

/** A limiter whose waits are counted under `limit` (`global`, or an upstream's host). */
export function createLimiter(bytesPerSecond: number, limit: string, metrics: Metrics): ByteRateLimiter {
  metrics.upstreamRateLimit.set({ limit }, bytesPerSecond);
  return new ByteRateLimiter(bytesPerSecond, { onWait: (priority, ms) => metrics.upstreamThrottled.inc({ limit, priority }, ms / 1000) });
}
