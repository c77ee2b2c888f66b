import type { Context, Hono } from 'hono';
import { RegistryError } from '../oci/errors.ts';
import { ImportError } from '../transfer/archive-source.ts';
import { repositoryOf } from '../transfer/import-plan.ts';
import type { ImportSummary, ImportTarget } from '../transfer/import.ts';
import type { AppEnv } from './app-env.ts';

export type ImportServices = {
  /** The configured upstream hosts and the default one: imports land only under those. */
  upstreamHosts: () => string[];
  defaultUpstream: string;
  /** Run the import of a tar body (transfer/import-stream.ts). */
  importTar: (body: ReadableStream<Uint8Array>, target: ImportTarget, label: string) => Promise<ImportSummary>;
};

/**
 * `POST /admin/import?upstream=HOST&repository=NAME&name=LABEL[&pin=true]` with a tar as the body:
 * what `gantry import` does while this Gantry holds the cache; behind the admin guard. Without
 * `upstream`, images land under the upstream their name gives, else the default one.
 * Bad input is a 400 with an OCI error body whose message names the archive and entry.
 */
export function registerImportRoute(app: Hono<AppEnv>, svc: ImportServices): void {
  // Mounted on the admin sub-app: its guard (loopback, admin token) has run.
  app.post('/import', async (c) => {
    const target = targetOf(c, svc);
    const body = c.req.raw.body;
    if (!body) throw badRequest('the request has no body: send the archive as a tar');
    try {
      return c.json(await svc.importTar(body, target, c.req.query('name') ?? 'request body'));
    } catch (err) {
      if (err instanceof ImportError) throw badRequest(err.message);
      throw err;
    }
  });
}

function targetOf(c: Context<AppEnv>, svc: ImportServices): ImportTarget {
  const named = c.req.query('upstream');
  const upstream = (named ?? svc.defaultUpstream).toLowerCase();
  if (!svc.upstreamHosts().includes(upstream)) throw badRequest(`upstream ${upstream} is not configured`);
  // No ?upstream=: each image lands under its name's registry when that is a configured upstream.
  const where: ImportTarget = named !== undefined ? { upstream } : { upstream, byRegistry: svc.upstreamHosts() };
  const pin = pinOf(c.req.query('pin'));
  const raw = c.req.query('repository');
  if (raw === undefined) return { ...where, ...pin };
  try {
    return { ...where, repository: repositoryOf(raw), ...pin };
  } catch {
    throw badRequest(`repository ${JSON.stringify(raw.slice(0, 256))} is not a valid repository name`);
  }
}

/** `pin=true` pins every imported image; absent or `false` pins none; anything else is refused, not guessed at. */
function pinOf(raw: string | undefined): { pin?: true } {
  if (raw === undefined || raw === 'false') return {};
  if (raw === 'true') return { pin: true };
  throw badRequest(`pin=${JSON.stringify(raw.slice(0, 64))}: expected true or false`);
}

function badRequest(message: string): RegistryError {
  return new RegistryError('MANIFEST_INVALID', { status: 400, message });
}
