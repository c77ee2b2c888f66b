import { Hono, type MiddlewareHandler } from 'hono';
import { RegistryError } from '../oci/errors.ts';
import type { AppEnv } from './app-env.ts';
import { registerExportRoute, type ExportRouteServices } from './export-route.ts';
import { registerImportRoute, type ImportServices } from './import-route.ts';
import { registerPrefetchRoutes, type PrefetchService } from './prefetch-route.ts';
import { registerPinsRoute, type PinsRouteServices } from './pins-route.ts';
import { clientAddress } from './accel.ts';
import { adminNetworkAllows, bearerIsAdminToken } from './viewer.ts';

export type AdminServices = {
  /** Re-hash the cache. */
  verifyCache: (opts: { remove: boolean }) => Promise<unknown>;
  adminRemote: boolean;
  /** When set, every admin request needs `Authorization: Bearer <token>`. */
  adminToken: string | undefined;
};

/**
 * The admin API, mounted at `/admin`. One guard covers every route registered here, so a new
 * admin endpoint is one line in `createAdminRoutes` and can't forget the checks.
 */
export function createAdminRoutes(svc: AdminServices & ExportRouteServices & PinsRouteServices & { imports?: ImportServices | undefined; prefetch?: PrefetchService | undefined }): Hono<AppEnv> {
  const admin = new Hono<AppEnv>();
  admin.use('*', adminGuard(svc));
  admin.post('/verify', async (c) => c.json(await svc.verifyCache({ remove: c.req.query('remove') === 'true' })));
  registerExportRoute(admin, svc);
  if (svc.imports) registerImportRoute(admin, svc.imports);
  if (svc.prefetch) registerPrefetchRoutes(admin, svc.prefetch);
  registerPinsRoute(admin, svc);
  return admin;
}

/**
 * Loopback (or adminRemote), then the bearer token if one is configured; logs every request
 * without it. The same rule as isAdminViewer (viewer.ts), told apart here into 403 and 401.
 */
export function adminGuard(svc: Pick<AdminServices, 'adminRemote' | 'adminToken'>): MiddlewareHandler<AppEnv> {
  const token = svc.adminToken;
  return async (c, next) => {
    const remote = clientAddress(c.env.incoming);
    const out = c.env.outgoing;
    out.once('close', () => c.get('log')().info({ admin: true, method: c.req.method, path: c.req.path, status: out.statusCode, remote }, 'admin request'));
    if (!adminNetworkAllows(remote, svc)) {
      throw new RegistryError('DENIED', { message: 'admin endpoints are only served to loopback clients' });
    }
    if (token !== undefined && !bearerIsAdminToken(c.req.header('authorization'), token)) {
      throw new RegistryError('UNAUTHORIZED', { message: 'admin endpoints need Authorization: Bearer <adminToken>', headers: { 'WWW-Authenticate': 'Bearer realm="gantry-admin"' } });
    }
    await next();
  };
}
