import type { Context } from 'hono';
import { RESPONSE_ALREADY_SENT } from '@hono/node-server/utils/response';
import { RegistryError } from '../oci/errors.ts';
import {
  ACCEPT_RANGES, CONTENT_RANGE, DOCKER_API_VERSION, DOCKER_API_VERSION_VALUE, DOCKER_CONTENT_DIGEST, LINK, OCI_FILTERS_APPLIED, WARNING, WARNING_STALE, WWW_AUTHENTICATE, X_CACHE, type CacheResult,
} from '../oci/headers.ts';
import { MAX_PAGE_ENTRIES, nextLink, paginate, parsePageQuery } from '../oci/pagination.ts';
import { MT_OCI_INDEX, parseAccept } from '../oci/media-types.ts';
import type { Reference } from '../oci/reference.ts';
import type { Digest } from '../oci/digest.ts';
import type { OpenedBlob, PullThroughBlobs } from '../proxy/blobs.ts';
import type { PullThroughManifests } from '../proxy/manifests.ts';
import type { PullThroughReferrers } from '../proxy/referrers.ts';
import type { Listing, PassthroughListings } from '../proxy/listings.ts';
import type { ResolvedTarget, Upstreams } from '../upstream/upstreams.ts';
import type { AppEnv } from './app-env.ts';
import { parseApiPath } from './parse-path.ts';
import { authenticate, challengeError, GANTRY_SERVICE, type ClientAuthServices } from './client-auth.ts';
import type { ClientCredential } from '../auth/credentials.ts';
import { parseRange } from './range.ts';
import { accelHeaders, isForwarded } from './accel.ts';
import { BlobSender } from './send-blob.ts';
import { isAdminViewer, viewerOf, type AdminAccess } from './viewer.ts';

export type RegistryServices = ClientAuthServices & AdminAccess & { upstreams: Upstreams; blobs: PullThroughBlobs; manifests: PullThroughManifests; listings: PassthroughListings; referrers: PullThroughReferrers };

/** The pull API: everything under /v2/. Read-only: any other method is UNSUPPORTED, as in distribution's proxy mode. */
export function createRegistryHandler(svc: RegistryServices) {
  const sender = new BlobSender();
  return async (c: Context<AppEnv>): Promise<Response> => {
    c.env.outgoing.setHeader(DOCKER_API_VERSION, DOCKER_API_VERSION_VALUE);
    const method = c.req.method;
    const route = parseApiPath(rawPath(c.req.url));
    if (method !== 'GET' && method !== 'HEAD') throw new RegistryError('UNSUPPORTED');
    if (route.route === 'catalog') return catalog(c, svc);
    const cred = await authenticate(c, svc);
    switch (route.route) {
      case 'base':
        // Clients that only send credentials after a challenge on the ping (skopeo, podman) need one here.
        if (cred.kind === 'none' && !c.req.header('authorization') && svc.authConfig.challengePing) throw challengeError(c, svc, GANTRY_SERVICE);
        return c.json({});
      case 'upload':
        throw new RegistryError('UNSUPPORTED');
      default:
        break;
    }
    const target = svc.upstreams.resolve(route.name, { ns: c.req.query('ns'), hostHeader: c.req.header('host') });
    try {
      switch (route.route) {
        case 'manifest':
          return await getManifest(c, svc, target, cred, route.reference);
        case 'blob':
          return await getBlob(c, svc, sender, target, cred, route.digest);
        case 'tags': {
          relayed(c, 'tags');
          const q = { n: c.req.query('n'), last: c.req.query('last') };
          const answer = await svc.listings.tags(listingRequest(c, target, cred), q);
          return answer.source === 'upstream' ? listing(c, answer.listing) : staleTags(c, target, answer.tags);
        }
        case 'referrers':
          return await getReferrers(c, svc, target, cred, route.digest);
      }
    } catch (err) {
      throw withChallenge(c, svc, err, target, cred);
    }
  };
}

/**
 * GET /v2/_catalog: the repositories in the cache under the names clients use, paged as the
 * distribution spec says. Restricted ones are listed only to the admin (viewer.ts, with the token
 * required), who shows the admin token as the bearer here: it then stands in for a registry
 * credential, which neither htpasswd nor an upstream would take.
 */
async function catalog(c: Context<AppEnv>, svc: RegistryServices): Promise<Response> {
  const admin = isAdminViewer(viewerOf(c), svc);
  if (!admin) await authenticate(c, svc);
  const q = parsePageQuery({ n: c.req.query('n'), last: c.req.query('last') });
  const repositories = await svc.listings.catalog.cachedRepositories({ includeRestricted: admin });
  const page = paginate(repositories.map((r) => r.name), q, MAX_PAGE_ENTRIES);
  const headers: Record<string, string> = page.next ? { [LINK]: nextLink('/v2/_catalog', page.next) } : {};
  return c.json({ repositories: page.items }, 200, headers);
}

function rawPath(url: string): string {
  const start = url.indexOf('/', url.indexOf('//') + 2);
  const q = url.indexOf('?', start);
  return url.slice(start, q === -1 ? undefined : q);
}

/**
 * A 401 must tell the client where to log in. Gantry's own token endpoint
 * works for every route (it translates names and relays credentials); the
 * upstream's challenge is kept only for a client that already talks to the
 * upstream's realm itself (a passed-through bearer token) on a route whose
 * names match the upstream's.
 */
function withChallenge(c: Context<AppEnv>, svc: RegistryServices, err: unknown, target: ResolvedTarget, cred: ClientCredential): unknown {
  if (!(err instanceof RegistryError) || err.code !== 'UNAUTHORIZED') return err;
  if (cred.kind === 'bearer' && !target.renamed && err.headers[WWW_AUTHENTICATE]) return err;
  const carriedToken = c.req.header('authorization') !== undefined;
  return challengeError(c, svc, target.upstream.host, `repository:${target.clientName}:pull`, err.message, carriedToken ? 'insufficient_scope' : undefined);
}

async function getManifest(
  c: Context<AppEnv>,
  svc: RegistryServices,
  target: ResolvedTarget,
  auth: ClientCredential,
  reference: Reference,
): Promise<Response> {
  const stats = c.get('stats');
  stats.kind = 'manifest';
  const headOnly = c.req.method === 'HEAD';
  const m = await svc.manifests.get({
    ...target,
    reference,
    accept: parseAccept([c.req.header('accept') ?? '']),
    auth,
    headOnly,
  });
  stats.result = m.result;
  const headers: Record<string, string> = {
    'Content-Type': m.mediaType,
    'Content-Length': String(m.size),
    [DOCKER_CONTENT_DIGEST]: m.digest,
    ETag: `"${m.digest}"`,
    [X_CACHE]: m.result.toUpperCase(),
  };
  // HEAD must go through hono: it answers HEAD by wrapping the GET handler's Response in a new
  // one, which would write the head a second time after a direct write.
  if (headOnly || !m.bytes) return c.body(null, 200, headers);
  if (reference.kind === 'digest' && m.result === 'hit' && m.file !== undefined && isForwarded(c.env.incoming)) {
    return delegate(c, svc, headers, m.file, m.size, auth);
  }
  // A GET is written straight to the socket, like blobs: a cached manifest is the hottest response
  // Gantry sends, and building web Headers and a Response for it is a good part of its CPU.
  stats.bytes = m.bytes.length;
  const out = c.env.outgoing;
  out.writeHead(200, headers);
  out.end(m.bytes);
  return RESPONSE_ALREADY_SENT;
}

async function getBlob(c: Context<AppEnv>, svc: RegistryServices, sender: BlobSender, target: ResolvedTarget, auth: ClientCredential, digest: Digest): Promise<Response> {
  const stats = c.get('stats');
  stats.kind = 'blob';
  const req = { ...target, digest, auth };
  const base: Record<string, string | number> = {
    'Content-Type': 'application/octet-stream',
    [DOCKER_CONTENT_DIGEST]: digest,
    ETag: `"${digest}"`,
    [ACCEPT_RANGES]: 'bytes',
  };
  if (c.req.method === 'HEAD') {
    const h = await svc.blobs.head(req);
    stats.result = h.result;
    const headers: Record<string, string> = { ...stringify(base), [X_CACHE]: h.result.toUpperCase() };
    if (h.size !== undefined) headers['Content-Length'] = String(h.size);
    return c.body(null, 200, headers);
  }
  let blob: OpenedBlob;
  try {
    blob = await svc.blobs.open(req, c.req.header('range'), parseRange);
  } catch (err) {
    // A refused Range or a fill that failed before the answer still counts as how the blob was found.
    const found = err instanceof RegistryError ? err.headers[X_CACHE] : undefined;
    if (found) stats.result = found.toLowerCase() as CacheResult;
    throw err;
  }
  stats.result = blob.result;
  base[X_CACHE] = blob.result.toUpperCase();
  if (isForwarded(c.env.incoming)) {
    if (blob.result === 'hit' && blob.file !== undefined && blob.size !== undefined) {
      if (!Buffer.isBuffer(blob.body)) blob.body.close();
      return delegate(c, svc, stringify(base), blob.file, blob.size, auth);
    }
    // A download in progress (it goes on without this request): the serving process tails its file.
    if (blob.filling !== undefined && blob.file !== undefined && blob.size !== undefined && !Buffer.isBuffer(blob.body)) {
      blob.body.close();
      return delegate(c, svc, stringify(base), blob.file, blob.size, auth, blob.filling);
    }
  }
  const { range } = blob;
  if (range) {
    base[CONTENT_RANGE] = `bytes ${range.start}-${range.end - 1}/${blob.size}`;
    base['Content-Length'] = range.end - range.start;
  } else if (blob.size !== undefined) base['Content-Length'] = blob.size;
  sender.send(c.env.outgoing, range ? 206 : 200, base, blob, stats, c.get('log')());
  return RESPONSE_ALREADY_SENT;
}

/**
 * A cache hit asked for by a serving process: answer with the object's headers and where its
 * file is (http/accel.ts), and the serving process sends it, now and for requests that look the
 * same while the answer holds. For an anonymous request that is as long as the object stays
 * cached; with a credential, as long as the upstream's yes is remembered here.
 */
function delegate(c: Context<AppEnv>, svc: RegistryServices, headers: Record<string, string>, file: string, size: number, auth: ClientCredential, filling?: string): Response {
  c.get('stats').delegated = true;
  const ttlMs = auth.kind === 'none' ? Infinity : Math.max(1, svc.authConfig.accessCheckTtlSeconds) * 1000;
  const out = c.env.outgoing;
  out.writeHead(200, accelHeaders(headers, file, size, ttlMs, filling));
  out.end();
  return RESPONSE_ALREADY_SENT;
}

/** An OCI image index of the subject's referrers, from the cache or the upstream (proxy/referrers.ts). */
async function getReferrers(c: Context<AppEnv>, svc: RegistryServices, target: ResolvedTarget, auth: ClientCredential, subject: Digest): Promise<Response> {
  const stats = c.get('stats');
  stats.kind = 'referrers';
  const r = await svc.referrers.get({ ...target, subject, artifactType: c.req.query('artifactType'), auth });
  stats.result = r.result;
  const headers: Record<string, string> = { 'Content-Type': MT_OCI_INDEX, 'Content-Length': String(r.bytes.length), [X_CACHE]: r.result.toUpperCase() };
  if (r.filtered) headers[OCI_FILTERS_APPLIED] = 'artifactType';
  if (r.result === 'stale') headers[WARNING] = WARNING_STALE;
  if (c.req.method === 'HEAD') return c.body(null, 200, headers);
  stats.bytes = r.bytes.length;
  return c.body(asBody(r.bytes), 200, headers);
}

function listingRequest(c: Context<AppEnv>, target: ResolvedTarget, auth: ClientCredential) {
  return { ...target, auth, accept: c.req.header('accept'), headOnly: c.req.method === 'HEAD' };
}

/** Tags and referrers are relayed, never cached: BYPASS, whether the upstream answers or fails. */
function relayed(c: Context<AppEnv>, kind: 'tags' | 'referrers'): void {
  const stats = c.get('stats');
  stats.kind = kind;
  stats.result = 'bypass';
}

function listing(c: Context<AppEnv>, l: Listing): Response {
  const stats = c.get('stats');
  const headers = { ...l.headers, [X_CACHE]: 'BYPASS' };
  if (!l.bytes) return c.body(null, 200, headers);
  stats.bytes = l.bytes.length;
  return c.body(asBody(l.bytes), 200, headers);
}

/**
 * A tag list from the cache while the upstream can't answer: paged here (the upstream was to do
 * that), and marked stale the way a cache marks what it could not revalidate.
 */
function staleTags(c: Context<AppEnv>, target: ResolvedTarget, tags: string[]): Response {
  const page = paginate(tags, parsePageQuery({ n: c.req.query('n'), last: c.req.query('last') }));
  const stats = c.get('stats');
  stats.result = 'stale';
  const headers: Record<string, string> = { 'Content-Type': 'application/json', [X_CACHE]: 'STALE', [WARNING]: WARNING_STALE };
  // The client's own path, and its ns: the next page must reach the same upstream.
  if (page.next) headers[LINK] = nextLink(`/v2/${target.clientName}/tags/list`, page.next, { ns: c.req.query('ns') });
  if (c.req.method === 'HEAD') return c.body(null, 200, headers);
  const body = JSON.stringify({ name: target.clientName, tags: page.items });
  stats.bytes = Buffer.byteLength(body);
  return c.body(body, 200, headers);
}

function stringify(h: Record<string, string | number>): Record<string, string> {
  return Object.fromEntries(Object.entries(h).map(([k, v]) => [k, String(v)]));
}

/** Node Buffers here are never backed by a SharedArrayBuffer; hono's types want that said. */
function asBody(buf: Buffer): Uint8Array<ArrayBuffer> {
  return buf as Uint8Array<ArrayBuffer>;
}
