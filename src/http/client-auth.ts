import type { Context } from 'hono';
import { GantryTokens } from '../auth/gantry-tokens.ts';
import { parseBasic, type ClientCredential } from '../auth/credentials.ts';
import type { Htpasswd } from '../auth/htpasswd.ts';
import type { AuthConfig } from '../config/config.ts';
import { RegistryError } from '../oci/errors.ts';
import { WWW_AUTHENTICATE } from '../oci/headers.ts';
import type { AppEnv } from './app-env.ts';

export type ClientAuthServices = {
  authConfig: AuthConfig;
  tokens: GantryTokens;
  htpasswd: Htpasswd | undefined;
  /** Gantry serves HTTPS itself (`tls.certFile`): the realm it derives from a request is https. */
  servesHttps?: boolean;
};

/** The service name in challenges that don't belong to one upstream (the /v2/ ping). */
export const GANTRY_SERVICE = 'gantry';

/**
 * Who is asking. Without client authentication configured, any credential is
 * accepted here and judged by the upstream; with an htpasswd file, only
 * Gantry users (by Basic or by a Gantry token) get in.
 */
export async function authenticate(c: Context<AppEnv>, svc: ClientAuthServices): Promise<ClientCredential> {
  const header = c.req.header('authorization');
  const required = svc.htpasswd !== undefined;
  if (!header) {
    if (required) throw challengeError(c, svc, GANTRY_SERVICE);
    return { kind: 'none' };
  }
  const bearer = /^Bearer\s+(\S+)\s*$/i.exec(header)?.[1];
  if (bearer !== undefined) {
    if (GantryTokens.isOurs(bearer)) {
      const cred = await svc.tokens.lookup(bearer);
      if (!cred) throw challengeError(c, svc, GANTRY_SERVICE, undefined, 'token expired or unknown', 'invalid_token');
      return cred;
    }
    if (required) throw challengeError(c, svc, GANTRY_SERVICE);
    return { kind: 'bearer', header };
  }
  const basic = parseBasic(header);
  if (!basic) throw challengeError(c, svc, GANTRY_SERVICE, undefined, 'unsupported Authorization scheme');
  if (svc.htpasswd) {
    if (await svc.htpasswd.verify(basic.username, basic.password)) return { kind: 'user', username: basic.username };
    throw challengeError(c, svc, GANTRY_SERVICE, undefined, 'invalid username or password');
  }
  return { kind: 'basic', header, username: basic.username };
}

/**
 * Gantry's own challenge, pointing at its token endpoint. `error` follows
 * RFC 6750 §3.1: clients (containerd) stop retrying a request that already
 * carried a token only when the challenge says why it was refused.
 */
export function gantryChallenge(c: Context<AppEnv>, svc: ClientAuthServices, service: string, scope?: string, error?: ChallengeErrorCode): string {
  const realm = svc.authConfig.realm ?? `${requestProto(c, svc)}://${c.req.header('host') ?? 'localhost'}/token`;
  const parts = [`realm="${realm}"`, `service="${service}"`];
  if (scope) parts.push(`scope="${scope}"`);
  if (error) parts.push(`error="${error}"`);
  return `Bearer ${parts.join(',')}`;
}

export type ChallengeErrorCode = 'invalid_token' | 'insufficient_scope';

export function challengeError(
  c: Context<AppEnv>,
  svc: ClientAuthServices,
  service: string,
  scope?: string,
  message?: string,
  error?: ChallengeErrorCode,
): RegistryError {
  return new RegistryError('UNAUTHORIZED', {
    ...(message ? { message } : {}),
    headers: { [WWW_AUTHENTICATE]: gantryChallenge(c, svc, service, scope, error) },
  });
}

/**
 * The scheme the client used: https on Gantry's own TLS port (a request a serving process
 * relays reaches this app over a private socket, so the setting is asked, not the socket), or
 * behind a TLS-terminating proxy that says so. A client sent to an http:// realm on the TLS port
 * gets no token, and so no image.
 */
function requestProto(c: Context<AppEnv>, svc: ClientAuthServices): string {
  return svc.servesHttps === true || c.req.header('x-forwarded-proto') === 'https' ? 'https' : 'http';
}
