import type { Context } from 'hono';
import { basicHeader, credentialKey, parseBasic, type ClientCredential } from '../auth/credentials.ts';
import { RegistryError } from '../oci/errors.ts';
import { checkUpstreamLogin } from '../proxy/upstream-login.ts';
import type { Upstreams } from '../upstream/upstreams.ts';
import type { AppEnv } from './app-env.ts';
import type { ClientAuthServices } from './client-auth.ts';

const REFRESH_TOKEN_TTL_S = 24 * 3600;

type TokenRequest = { username?: string | undefined; password?: string | undefined; refreshToken?: string | undefined; service?: string | undefined; scopes: string[]; wantRefresh: boolean };

/**
 * Gantry's token endpoint (Docker token auth spec; GET with Basic, and the
 * OAuth2 POST form containerd uses). It hands out anonymous tokens, tokens
 * for Gantry users, and tokens that stand for a client's upstream
 * credentials, which are checked with the upstream first (bad ones are a 401
 * here, so clients report a login failure).
 */
export function createTokenHandler(svc: ClientAuthServices & { upstreams: Upstreams }) {
  return async (c: Context<AppEnv>): Promise<Response> => {
    const req = await readTokenRequest(c);
    let cred: ClientCredential;
    if (req.refreshToken !== undefined) {
      const found = await svc.tokens.lookup(req.refreshToken);
      if (!found) throw new RegistryError('UNAUTHORIZED', { message: 'invalid refresh token' });
      cred = found;
    } else if (req.username === undefined) {
      if (svc.htpasswd) throw new RegistryError('UNAUTHORIZED');
      cred = { kind: 'none' };
    } else if (svc.htpasswd) {
      if (!(await svc.htpasswd.verify(req.username, req.password ?? ''))) throw new RegistryError('UNAUTHORIZED', { message: 'invalid username or password' });
      cred = { kind: 'user', username: req.username };
    } else {
      cred = { kind: 'basic', header: basicHeader(req.username, req.password ?? ''), username: req.username };
      await checkUpstreamLogin(svc.upstreams, cred, { service: req.service, scopes: req.scopes });
    }
    const token = await svc.tokens.issue(cred);
    const body: Record<string, unknown> = {
      token,
      access_token: token,
      expires_in: svc.tokens.ttlSeconds,
      issued_at: new Date().toISOString(),
    };
    if (req.wantRefresh && cred.kind !== 'none') body['refresh_token'] = await svc.tokens.issue(cred, REFRESH_TOKEN_TTL_S);
    c.get('log')().info({ service: req.service, scopes: req.scopes, account: req.username, kind: cred.kind, cred: credentialKey(cred) }, 'token issued');
    return c.json(body);
  };
}

async function readTokenRequest(c: Context<AppEnv>): Promise<TokenRequest> {
  const url = new URL(c.req.url);
  const scopes = url.searchParams.getAll('scope').flatMap((s) => s.split(' ')).filter(Boolean);
  const basic = parseBasic(c.req.header('authorization') ?? '');
  if (c.req.method !== 'POST') {
    return {
      username: basic?.username, password: basic?.password, service: url.searchParams.get('service') ?? undefined, scopes,
      wantRefresh: url.searchParams.get('offline_token') === 'true',
    };
  }
  let text: string;
  try {
    text = await c.req.text();
  } catch {
    // The client went away mid-body: its problem, not a server error.
    throw new RegistryError('UNSUPPORTED', { status: 400, message: 'incomplete token request' });
  }
  if (text.length > 64 * 1024) throw new RegistryError('UNSUPPORTED', { status: 400, message: 'token request too large' });
  const form = new URLSearchParams(text);
  const grant = form.get('grant_type');
  const formScopes = form.getAll('scope').flatMap((s) => s.split(' ')).filter(Boolean);
  const common = { service: form.get('service') ?? undefined, scopes: [...scopes, ...formScopes], wantRefresh: true };
  if (grant === 'password') return { ...common, username: form.get('username') ?? undefined, password: form.get('password') ?? undefined };
  if (grant === 'refresh_token') return { ...common, refreshToken: form.get('refresh_token') ?? '' };
  throw new RegistryError('UNSUPPORTED', { status: 400, message: 'unsupported grant_type' });
}
