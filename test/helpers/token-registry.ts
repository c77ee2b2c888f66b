// A real docker-registry (distribution 2.8) behind Docker-style bearer-token auth, with the token
// server implemented here: the shape of Docker Hub / GHCR / Harbor that a pull-through mirror meets.
//
// Token server (https://docs.docker.com/registry/spec/auth/token/, .../jwt/, .../oauth/):
//   GET  /token?service=S&scope=repository:x:pull[&scope=...]   optional Basic auth  (docker, skopeo, containers/image)
//   POST /token  form: grant_type=password|refresh_token, username, password | refresh_token,
//                client_id, scope (space-separated), service, access_type=offline   (containerd)
// Policy: anonymous may pull repositories NOT under privatePrefix; any valid user may pull everything
// (and list the catalog); only `pushAuth` may also push/delete. Scopes the caller may not have are
// silently dropped from the token (as Docker Hub does), so the registry, not the token server,
// answers 401. A wrong password (or unknown refresh token) is a 401 from the token server.
// JWTs are ES256, signed with a throwaway key whose self-signed certificate is both the x5c header
// and the registry's rootcertbundle.
import { execFile } from 'node:child_process';
import { X509Certificate, createPrivateKey, randomBytes, randomUUID, sign, timingSafeEqual } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import http from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import type { BuiltImage, BuiltIndex } from '../fixtures/images.ts';
import { startUpstreamRegistry } from './upstream-registry.ts';
import type { UpstreamRegistry } from './upstream-registry.ts';
import { listenOnLoopback } from './loopback.ts';

const execFileP = promisify(execFile);

export type Credentials = { username: string; password: string };

export type TokenRequest = {
  method: string;
  /** Every requested scope, as sent (`repository:name:pull,push`). */
  scope: string[];
  /** The username presented (Basic auth, form field or refresh token owner), whether or not it was valid. */
  account?: string;
  /** POST only: the OAuth2 grant_type. */
  grantType?: string;
  /** POST only: the OAuth2 client_id. */
  clientId?: string;
  /** The token server's HTTP status. */
  status: number;
};

export type AccessEntry = { type: string; name: string; actions: string[] };

export type TokenRegistryOptions = {
  /** username → password. These users may pull everything; they may not push. */
  users: Record<string, string>;
  /** Repositories whose name starts with this need credentials. Default 'private/'. */
  privatePrefix?: string;
  /** Token lifetime (`exp - iat`, `expires_in`). Default 300. */
  tokenTtlSeconds?: number;
};

export type TokenRegistry = {
  /** Registry base URL, e.g. http://127.0.0.1:PORT */
  url: string;
  /** Registry host:port, for skopeo's docker://HOST/repo:tag */
  host: string;
  /** Token realm, e.g. http://127.0.0.1:PORT/token */
  tokenUrl: string;
  /** `service` (the JWT audience) the registry expects. */
  service: string;
  /** `iss` of issued tokens. */
  issuer: string;
  tokenRequests: ReadonlyArray<TokenRequest>;
  /** A user (not in `users`) allowed to pull, push and delete everything. */
  pushAuth: Credentials;
  stop(): Promise<void>;
};

const SERVICE = 'gantry-test-registry';
const ISSUER = 'gantry-test-token-issuer';
const OPENSSL_TIMEOUT_MS = 20_000;

export async function startTokenRegistry(opts: TokenRegistryOptions): Promise<TokenRegistry> {
  const privatePrefix = opts.privatePrefix ?? 'private/';
  const ttl = opts.tokenTtlSeconds ?? 300;
  const pushAuth: Credentials = { username: `pusher-${randomBytes(4).toString('hex')}`, password: randomBytes(12).toString('hex') };
  const users = new Map<string, string>(Object.entries(opts.users));
  users.set(pushAuth.username, pushAuth.password);

  const dir = await mkdtemp(path.join(tmpdir(), 'token-registry-'));
  let server: http.Server | undefined;
  let registry: UpstreamRegistry | undefined;
  const cleanup = async (): Promise<void> => {
    await registry?.stop();
    if (server) await closeServer(server);
    await rm(dir, { recursive: true, force: true });
  };
  try {
    const { key, certDerBase64, certPath } = await makeSigningKey(dir);
    const tokenRequests: TokenRequest[] = [];
    const refreshTokens = new Map<string, string>(); // refresh token → account

    const checkPassword = (username: string, password: string): boolean => {
      const expected = users.get(username);
      if (expected === undefined) return false;
      const a = Buffer.from(expected);
      const b = Buffer.from(password);
      return a.length === b.length && timingSafeEqual(a, b);
    };

    const grant = (account: string | undefined, scopes: string[]): AccessEntry[] => {
      const access: AccessEntry[] = [];
      for (const raw of scopes) {
        const parsed = parseScope(raw);
        if (parsed === undefined) continue;
        const allowed = allowedActions(account, parsed.type, parsed.name);
        const actions = parsed.actions.filter((a) => allowed.has(a));
        if (actions.length === 0) continue;
        const same = access.find((e) => e.type === parsed.type && e.name === parsed.name);
        if (same) same.actions = [...new Set([...same.actions, ...actions])];
        else access.push({ type: parsed.type, name: parsed.name, actions });
      }
      return access;
    };

    const allowedActions = (account: string | undefined, type: string, name: string): Set<string> => {
      const pusher = account === pushAuth.username;
      if (type === 'repository') {
        if (pusher) return new Set(['pull', 'push', 'delete', '*']);
        if (account !== undefined) return new Set(['pull']);
        return name.startsWith(privatePrefix) ? new Set() : new Set(['pull']);
      }
      if (type === 'registry' && name === 'catalog' && account !== undefined) return new Set(['*']);
      return new Set();
    };

    const issue = (account: string | undefined, access: AccessEntry[]): { token: string; expiresIn: number; issuedAt: string } => {
      const now = Math.floor(Date.now() / 1000);
      const header = { alg: 'ES256', typ: 'JWT', x5c: [certDerBase64] };
      const claims = {
        iss: ISSUER,
        sub: account ?? '',
        aud: SERVICE,
        exp: now + ttl,
        nbf: now - 10,
        iat: now,
        jti: randomUUID(),
        access,
      };
      const signingInput = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
      const signature = sign('sha256', Buffer.from(signingInput), { key, dsaEncoding: 'ieee-p1363' });
      return { token: `${signingInput}.${b64url(signature)}`, expiresIn: ttl, issuedAt: new Date(now * 1000).toISOString() };
    };

    server = http.createServer((req, res) => {
      void handle(req, res).catch((err: unknown) => {
        if (!res.headersSent) sendJson(res, 500, { error: 'server_error', error_description: String(err) });
        else res.destroy();
      });
    });

    const handle = async (req: http.IncomingMessage, res: http.ServerResponse): Promise<void> => {
      const url = new URL(req.url ?? '/', 'http://token.invalid');
      if (url.pathname !== '/token') {
        await drain(req);
        sendJson(res, 404, { error: 'not_found' });
        return;
      }
      const record = (entry: Omit<TokenRequest, 'status'>, status: number): void => {
        tokenRequests.push({ ...entry, status });
      };

      if (req.method === 'GET') {
        await drain(req);
        const scope = splitScopes(url.searchParams.getAll('scope'));
        const basic = parseBasic(req.headers.authorization);
        const entry: Omit<TokenRequest, 'status'> = { method: 'GET', scope, ...(basic ? { account: basic.username } : {}) };
        const service = url.searchParams.get('service');
        if (service !== null && service !== SERVICE) {
          record(entry, 400);
          sendJson(res, 400, { error: 'invalid_request', details: `unknown service ${JSON.stringify(service)}` });
          return;
        }
        if (basic && !checkPassword(basic.username, basic.password)) {
          record(entry, 401);
          sendUnauthorized(res);
          return;
        }
        const account = basic?.username;
        const { token, expiresIn, issuedAt } = issue(account, grant(account, scope));
        const body: Record<string, unknown> = { token, access_token: token, expires_in: expiresIn, issued_at: issuedAt };
        if (account !== undefined && url.searchParams.get('offline_token') === 'true') body['refresh_token'] = newRefreshToken(refreshTokens, account);
        record(entry, 200);
        sendJson(res, 200, body);
        return;
      }

      if (req.method === 'POST') {
        const form = new URLSearchParams((await readBody(req)).toString('utf8'));
        const grantType = form.get('grant_type') ?? '';
        const clientId = form.get('client_id');
        const scope = splitScopes(form.getAll('scope'));
        const entry: Omit<TokenRequest, 'status'> = { method: 'POST', scope, grantType, ...(clientId !== null ? { clientId } : {}) };
        const service = form.get('service');
        if (service !== null && service !== SERVICE) {
          record(entry, 400);
          sendJson(res, 400, { error: 'invalid_request', error_description: `unknown service ${JSON.stringify(service)}` });
          return;
        }
        let account: string;
        if (grantType === 'password') {
          account = form.get('username') ?? '';
          entry.account = account;
          if (!checkPassword(account, form.get('password') ?? '')) {
            record(entry, 401);
            sendUnauthorized(res);
            return;
          }
        } else if (grantType === 'refresh_token') {
          const owner = refreshTokens.get(form.get('refresh_token') ?? '');
          if (owner === undefined) {
            record(entry, 401);
            sendUnauthorized(res, 'invalid refresh token');
            return;
          }
          account = owner;
          entry.account = account;
        } else {
          record(entry, 400);
          sendJson(res, 400, { error: 'unsupported_grant_type', error_description: `grant_type ${JSON.stringify(grantType)}` });
          return;
        }
        const { token, expiresIn, issuedAt } = issue(account, grant(account, scope));
        const body: Record<string, unknown> = { token, access_token: token, expires_in: expiresIn, issued_at: issuedAt, scope: scope.join(' ') };
        if (grantType === 'password') body['refresh_token'] = newRefreshToken(refreshTokens, account);
        record(entry, 200);
        sendJson(res, 200, body);
        return;
      }

      await drain(req);
      res.setHeader('allow', 'GET, POST');
      sendJson(res, 405, { error: 'method_not_allowed' });
    };

    const srv = server;
    const tokenUrl = `http://127.0.0.1:${await listenOnLoopback(srv)}/token`;

    registry = await startUpstreamRegistry({
      storage: 'filesystem',
      extraConfig: { auth: { token: { realm: tokenUrl, service: SERVICE, issuer: ISSUER, rootcertbundle: certPath } } },
    });

    let stopping: Promise<void> | undefined;
    return {
      url: registry.url,
      host: registry.host,
      tokenUrl,
      service: SERVICE,
      issuer: ISSUER,
      tokenRequests,
      pushAuth,
      stop() {
        stopping ??= cleanup();
        return stopping;
      },
    };
  } catch (err) {
    await cleanup().catch(() => {});
    throw err;
  }
}

// ---------------------------------------------------------------------------------------------
// Client helpers (for tests): fetch a token, push with it, decode it.

type TokenEndpoint = { tokenUrl: string; service: string };

/**
 * Ask the token server for a token. GET with optional Basic auth, or POST with an OAuth2 password
 * grant (needs `auth`). Throws on a non-200 answer.
 */
export async function fetchToken(
  reg: TokenEndpoint,
  opts: { scope: string[]; auth?: Credentials; method?: 'GET' | 'POST'; clientId?: string; signal?: AbortSignal },
): Promise<{ token: string; body: Record<string, unknown> }> {
  const signal = opts.signal ?? AbortSignal.timeout(10_000);
  let res: Response;
  if ((opts.method ?? 'GET') === 'GET') {
    const url = new URL(reg.tokenUrl);
    url.searchParams.set('service', reg.service);
    for (const s of opts.scope) url.searchParams.append('scope', s);
    const headers: Record<string, string> = {};
    if (opts.auth) headers['authorization'] = basicHeader(opts.auth);
    res = await fetch(url, { headers, signal });
  } else {
    if (!opts.auth) throw new Error('fetchToken: POST (password grant) needs auth');
    const form = new URLSearchParams({
      grant_type: 'password',
      username: opts.auth.username,
      password: opts.auth.password,
      client_id: opts.clientId ?? 'gantry-test',
      service: reg.service,
      access_type: 'offline',
    });
    if (opts.scope.length > 0) form.set('scope', opts.scope.join(' '));
    res = await fetch(reg.tokenUrl, { method: 'POST', body: form, signal });
  }
  const text = await res.text();
  if (res.status !== 200) throw new Error(`token server: HTTP ${res.status} ${text.slice(0, 500)}`);
  const body = JSON.parse(text) as Record<string, unknown>;
  const token = body['token'] ?? body['access_token'];
  if (typeof token !== 'string') throw new Error(`token server: no token in ${text.slice(0, 500)}`);
  return { token, body };
}

/** The (unverified) header and claims of a JWT. */
export function decodeJwt(token: string): { header: Record<string, unknown>; claims: Record<string, unknown> & { access?: AccessEntry[] } } {
  const [h = '', c = ''] = token.split('.');
  return {
    header: JSON.parse(Buffer.from(h, 'base64url').toString('utf8')) as Record<string, unknown>,
    claims: JSON.parse(Buffer.from(c, 'base64url').toString('utf8')) as Record<string, unknown> & { access?: AccessEntry[] },
  };
}

const PUSH_TIMEOUT_MS = 120_000;

/**
 * images.ts's pushImage only speaks Basic auth; this is the same push (blobs, child manifests by
 * digest, top manifest by tag) with a bearer token for `repository:<repo>:pull,push`.
 */
export async function pushImageWithToken(
  reg: TokenEndpoint & { url: string; pushAuth: Credentials },
  repo: string,
  tag: string,
  image: BuiltImage | BuiltIndex,
  auth: Credentials = reg.pushAuth,
): Promise<void> {
  const { token } = await fetchToken(reg, { scope: [`repository:${repo}:pull,push`], auth });
  const base = reg.url.replace(/\/+$/, '');
  const bearer = (extra: Record<string, string> = {}): Record<string, string> => ({ ...extra, authorization: `Bearer ${token}` });
  const call = async (what: string, input: string | URL, init: RequestInit, ok: number[]): Promise<Response> => {
    const res = await fetch(input, { ...init, signal: AbortSignal.timeout(PUSH_TIMEOUT_MS) });
    if (!ok.includes(res.status)) {
      const text = await res.text().catch(() => '');
      throw new Error(`${what}: HTTP ${res.status} ${text.slice(0, 2000)}`);
    }
    return res;
  };
  const pushManifest = async (reference: string, bytes: Buffer, mediaType: string): Promise<void> => {
    const res = await call(`PUT manifest ${repo}:${reference}`, `${base}/v2/${repo}/manifests/${reference}`, {
      method: 'PUT',
      headers: bearer({ 'content-type': mediaType }),
      body: bytes,
    }, [201]);
    await res.body?.cancel();
  };
  const images = 'children' in image ? image.children : [image];
  for (const img of images) {
    for (const blob of img.blobs) {
      const head = await call(`HEAD blob ${blob.digest}`, `${base}/v2/${repo}/blobs/${blob.digest}`, { method: 'HEAD', headers: bearer() }, [200, 404]);
      await head.body?.cancel();
      if (head.status === 200) continue;
      const start = await call(`POST upload for ${repo}`, `${base}/v2/${repo}/blobs/uploads/`, {
        method: 'POST',
        headers: bearer({ 'content-length': '0' }),
      }, [202]);
      await start.body?.cancel();
      const location = start.headers.get('location');
      if (location === null) throw new Error(`POST upload for ${repo}: no Location header`);
      const uploadUrl = new URL(location, `${base}/`);
      uploadUrl.searchParams.set('digest', blob.digest);
      const put = await call(`PUT blob ${blob.digest}`, uploadUrl, {
        method: 'PUT',
        headers: bearer({ 'content-type': 'application/octet-stream' }),
        body: blob.bytes,
      }, [201]);
      await put.body?.cancel();
    }
    if (img !== image) await pushManifest(img.manifestDigest, img.manifest, img.mediaType);
  }
  await pushManifest(tag, image.manifest, image.mediaType);
}

// ---------------------------------------------------------------------------------------------
// Internals

async function makeSigningKey(dir: string): Promise<{ key: KeyObject; certDerBase64: string; certPath: string }> {
  const keyPath = path.join(dir, 'token.key');
  const certPath = path.join(dir, 'token.crt');
  try {
    await execFileP(
      'openssl',
      [
        'req', '-x509',
        '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1',
        '-nodes', '-subj', '/CN=gantry-test-token', '-days', '2',
        '-keyout', keyPath, '-out', certPath,
      ],
      { timeout: OPENSSL_TIMEOUT_MS },
    );
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new Error('token registry needs the openssl CLI to make its signing certificate: apt-get install openssl', { cause: err });
    }
    throw err;
  }
  const key = createPrivateKey(await readFile(keyPath));
  const cert = new X509Certificate(await readFile(certPath));
  return { key, certDerBase64: cert.raw.toString('base64'), certPath };
}

/** `type:name:actions`; the name may itself contain ':' (host:port/repo), the actions never do. */
function parseScope(scope: string): { type: string; name: string; actions: string[] } | undefined {
  const first = scope.indexOf(':');
  const last = scope.lastIndexOf(':');
  if (first <= 0 || last === first) return undefined;
  return {
    type: scope.slice(0, first),
    name: scope.slice(first + 1, last),
    actions: scope.slice(last + 1).split(',').filter((a) => a !== ''),
  };
}

/** `scope` may repeat and (OAuth2 style) hold several space-separated scopes. */
function splitScopes(values: string[]): string[] {
  return values.flatMap((v) => v.split(' ')).filter((s) => s !== '');
}

function parseBasic(header: string | undefined): Credentials | undefined {
  const m = /^Basic\s+(\S+)\s*$/i.exec(header ?? '');
  if (!m?.[1]) return undefined;
  const decoded = Buffer.from(m[1], 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  if (colon < 0) return { username: decoded, password: '' };
  return { username: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
}

function basicHeader(auth: Credentials): string {
  return `Basic ${Buffer.from(`${auth.username}:${auth.password}`).toString('base64')}`;
}

function newRefreshToken(store: Map<string, string>, account: string): string {
  const token = randomBytes(24).toString('base64url');
  store.set(token, account);
  return token;
}

function b64url(data: string | Buffer): string {
  return Buffer.from(data).toString('base64url');
}

function sendJson(res: http.ServerResponse, status: number, body: unknown): void {
  const bytes = Buffer.from(JSON.stringify(body));
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': bytes.length });
  res.end(bytes);
}

function sendUnauthorized(res: http.ServerResponse, details = 'incorrect username or password'): void {
  // Docker Hub's GET shape ({details}) plus OAuth2's ({error, error_description}) for POST clients.
  sendJson(res, 401, { details, error: 'invalid_grant', error_description: details });
}

const MAX_BODY = 64 * 1024;

async function readBody(req: http.IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    const buf = chunk as Buffer;
    size += buf.length;
    if (size > MAX_BODY) throw new Error('token request body too large');
    chunks.push(buf);
  }
  return Buffer.concat(chunks);
}

async function drain(req: http.IncomingMessage): Promise<void> {
  for await (const _ of req) {
    // discard
  }
}

function closeServer(server: http.Server): Promise<void> {
  return new Promise((resolve) => {
    server.close(() => resolve());
    server.closeAllConnections();
  });
}
