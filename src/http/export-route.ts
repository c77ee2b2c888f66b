import type { Hono } from 'hono';
import { PassThrough, Readable } from 'node:stream';
import type { Config } from '../config/config.ts';
import { RegistryError } from '../oci/errors.ts';
import { parsePlatform, type Platform } from '../oci/manifest.ts';
import type { ContentCache } from '../store/content-cache.ts';
import { archiveBytes } from '../transfer/export-archive.ts';
import { planFromCache, writeFromCache } from '../transfer/export-images.ts';
import { EXPORT_BYTES_HEADER, ExportError, type ExportPlan } from '../transfer/export-plan.ts';
import type { AppEnv } from './app-env.ts';

export type ExportRouteServices = {
  /** The cache and upstream names `GET /admin/export` reads; absent, the route is not served. */
  exportSource?: { cache: ContentCache; config: Pick<Config, 'upstreams' | 'defaultUpstream'> };
};

/**
 * `GET /admin/export?ref=R[&ref=R...][&platform=os/arch...]`: the archive `gantry export` writes,
 * streamed from the running instance (which holds the index's lock). Everything is planned before
 * the first byte, so an uncached image is a 404 with an OCI error body naming it; a failure later
 * (a file vanishing under eviction) cuts the response, which the CLI treats as a failed export.
 */
export function registerExportRoute(app: Hono<AppEnv>, svc: ExportRouteServices): void {
  const source = svc.exportSource;
  if (!source) return;
  // Mounted on the admin sub-app: its guard (loopback, admin token) has run.
  app.get('/export', async (c) => {
    const refs = c.req.queries('ref') ?? [];
    if (refs.length === 0) throw new RegistryError('NAME_INVALID', { status: 400, message: 'export: give at least one ref= parameter' });
    const plan = await planOrReject(refs, platformsOf(c.req.queries('platform') ?? []), source);
    const body = new PassThrough();
    writeFromCache(plan, source.cache, body).catch((err: unknown) => {
      c.get('log')().warn({ err: (err as Error).message }, 'export cut short');
      body.destroy(err as Error);
    });
    return new Response(Readable.toWeb(body) as ReadableStream, { headers: { 'Content-Type': 'application/x-tar', [EXPORT_BYTES_HEADER]: String(archiveBytes(plan)) } });
  });
}

function platformsOf(raw: readonly string[]): Platform[] {
  try {
    return raw.map(parsePlatform);
  } catch (err) {
    throw new RegistryError('NAME_INVALID', { status: 400, message: (err as Error).message });
  }
}

async function planOrReject(refs: readonly string[], platforms: readonly Platform[], source: NonNullable<ExportRouteServices['exportSource']>): Promise<ExportPlan> {
  try {
    return await planFromCache({ refs, platforms }, source.cache, source.config);
  } catch (err) {
    if (err instanceof ExportError) throw new RegistryError('MANIFEST_UNKNOWN', { message: err.message });
    if (err instanceof RegistryError) throw err;
    if (err instanceof Error && err.message.startsWith('invalid image reference')) throw new RegistryError('NAME_INVALID', { status: 400, message: err.message });
    throw err;
  }
}
