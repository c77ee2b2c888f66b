import type { ClientCredential } from '../auth/credentials.ts';
import { RegistryError } from '../oci/errors.ts';
import type { Upstreams } from '../upstream/upstreams.ts';

const MAX_REPOSITORIES = 16;

/**
 * Ask the upstream whether a client's credentials are good, for the
 * repositories the client asked about (`repository:<name>:pull` scopes,
 * translated to the upstream's names). Without a repository scope (a
 * `docker login`-style request) they are checked against the upstream named
 * by `service`, or the default upstream, with no scope. Refused credentials
 * are UNAUTHORIZED, so clients report a login failure.
 */
export async function checkUpstreamLogin(upstreams: Upstreams, cred: ClientCredential, req: { service: string | undefined; scopes: string[] }): Promise<void> {
  const ns = req.service && upstreams.byName(req.service) ? req.service : undefined;
  const repos = [...new Set(req.scopes.map((s) => /^repository:(.+):([a-z,*]+)$/.exec(s)?.[1]).filter((r): r is string => r !== undefined))];
  // Each repository costs an upstream exchange: a client asks for one to three; hundreds are abuse.
  if (repos.length > MAX_REPOSITORIES) throw new RegistryError('UNSUPPORTED', { status: 400, message: `at most ${MAX_REPOSITORIES} repositories per token request` });
  const targets = repos.length > 0 ? repos.map((r) => upstreams.resolve(r, { ns })) : [{ upstream: upstreams.byName(ns ?? '') ?? upstreams.defaultUpstream(), remoteName: '' }];
  for (const target of targets) {
    if (!(await target.upstream.acceptsCredential(target.remoteName, cred))) {
      throw new RegistryError('UNAUTHORIZED', { message: 'the upstream refused these credentials' });
    }
  }
}
