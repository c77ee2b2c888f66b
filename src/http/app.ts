import { randomUUID } from 'node:crypto';
import { Hono, type Context } from 'hono';
import { RegistryError, toErrorBody } from '../oci/errors.ts';
import { DOCKER_API_VERSION, DOCKER_API_VERSION_VALUE, REQUEST_ID, X_CACHE } from '../oci/headers.ts';
import { accessLogger, loggedPath, type Logger } from '../observability/logger.ts';
import type { Metrics } from '../observability/metrics.ts';
import { createAdminRoutes, type AdminServices } from './admin-routes.ts';
import type { AppEnv, RequestStats } from './app-env.ts';
import { createRegistryHandler, type RegistryServices } from './registry-routes.ts';
import type { ExportRouteServices } from './export-route.ts';
import type { PrefetchService } from './prefetch-route.ts';
import type { ImportServices } from './import-route.ts';
import type { PinsRouteServices } from './pins-route.ts';
import { createTokenHandler } from './token-route.ts';
import { createPeerRoutes, type PeerServices } from './peer-routes.ts';

export type AppServices = RegistryServices & {
  metrics: Metrics;
  log: Logger;
  isReady: () => boolean;
  /** POST /admin/import (gantry import while serving); absent: no such route. */
  imports?: ImportServices;
  /** /admin/prefetch (gantry prefetch); absent: no such routes. */
  prefetch?: PrefetchService;
  /** /metrics when other processes' metrics are merged in (serving processes); absent: this process's registry. */
  metricsText?: () => Promise<{ text: string; contentType: string }>;
  /** The endpoint other nodes stream blobs from (cluster.peerToken set); absent: no such route. */
  peer?: PeerServices | undefined;
  /** Lines /readyz adds after ready (Redis, S3). */
  readiness?: () => string[];
} & AdminServices & ExportRouteServices & PinsRouteServices;

const REQUEST_ID_PATTERN = /^[A-Za-z0-9._-]{1,64}$/;

/** Wire the middleware, the pull API, the ops endpoints and the one error handler. */
export function createApp(svc: AppServices): Hono<AppEnv> {
  const app = new Hono<AppEnv>();
  const access = accessLogger(svc.log);

  app.use('*', async (c, next) => {
    const incoming = c.req.header(REQUEST_ID);
    const reqId = incoming && REQUEST_ID_PATTERN.test(incoming) ? incoming : randomUUID();
    let child: Logger | undefined;
    const log = (): Logger => (child ??= svc.log.child({ reqId }));
    const stats: RequestStats = { kind: undefined, result: undefined, bytes: 0 };
    c.set('reqId', reqId);
    c.set('log', log);
    c.set('stats', stats);
    // On the Node response itself, not c.header(): it then reaches every answer, including those
    // written straight to the socket, and no web Headers object is built for it.
    c.env.outgoing.setHeader(REQUEST_ID, reqId);
    const started = performance.now();
    const out = c.env.outgoing;
    // Log when the response has really finished (blob bodies outlive the handler).
    out.once('close', () => {
      if (stats.delegated) return;
      const durationMs = Math.round((performance.now() - started) * 10) / 10;
      const status = out.statusCode;
      const aborted = !out.writableFinished;
      if (stats.kind) {
        const result: string = stats.result ?? 'error';
        svc.metrics.requests.inc({ kind: stats.kind, method: c.req.method, result, status: String(status) });
        svc.metrics.requestDuration.observe({ kind: stats.kind, result }, durationMs / 1000);
        if (stats.bytes > 0) svc.metrics.servedBytes.inc({ kind: stats.kind, source: result === 'hit' || result === 'stale' || result === 'revalidated' ? 'cache' : 'upstream' }, stats.bytes);
      }
      if (!svc.log.isLevelEnabled('info')) return;
      const path = loggedPath(c.req.path);
      access.info({ reqId, method: c.req.method, path, status, bytes: stats.bytes, cache: stats.result, durationMs, aborted: aborted || undefined }, 'request');
    });
    await next();
  });

  app.get('/healthz', (c) => c.text('ok'));
  // Ready even while Redis or S3 are down (the node then works alone): the lines after say so.
  app.get('/readyz', (c) => {
    const detail = svc.readiness?.() ?? [];
    return svc.isReady() ? c.text(['ready', ...detail].join('\n')) : c.text(['not ready', ...detail].join('\n'), 503);
  });
  app.get('/metrics', async (c) => {
    const m = svc.metricsText ? await svc.metricsText() : { text: await svc.metrics.registry.metrics(), contentType: svc.metrics.registry.contentType };
    return c.text(m.text, 200, { 'Content-Type': m.contentType });
  });

  // Admin: one guard for every /admin route (loopback unless adminRemote, then the admin token).
  app.route('/admin', createAdminRoutes(svc));
  if (svc.peer) app.route('/_gantry/peer', createPeerRoutes(svc.peer));

  const token = createTokenHandler(svc);
  app.get('/token', token);
  app.post('/token', token);

  const registry = createRegistryHandler(svc);
  app.all('/v2', registry);
  app.all('/v2/*', registry);

  app.notFound((c) => errorResponse(c, new RegistryError('UNSUPPORTED', { status: 404, message: 'no such endpoint' })));
  app.onError((err, c) => {
    if (err instanceof RegistryError) {
      const log = c.get('log')?.() ?? svc.log;
      if (err.status >= 500) log.error({ code: err.code, err: err.message, cause: (err.cause as Error | undefined)?.message }, 'request failed');
      return errorResponse(c, err);
    }
    (c.get('log')?.() ?? svc.log).error({ err }, 'unhandled error');
    return errorResponse(c, new RegistryError('UNKNOWN', { cause: err }));
  });
  return app;
}

function errorResponse(c: Context<AppEnv>, err: RegistryError): Response {
  const headers: Record<string, string> = { ...err.headers, [DOCKER_API_VERSION]: DOCKER_API_VERSION_VALUE, 'Content-Type': 'application/json' };
  const stats = c.get('stats');
  if (stats?.result) headers[X_CACHE] = stats.result.toUpperCase();
  const body = JSON.stringify(toErrorBody(err));
  // A HEAD says how long its GET's body would be, as for any other answer.
  if (c.req.method === 'HEAD') return c.body(null, err.status as 400, { ...headers, 'Content-Length': String(Buffer.byteLength(body)) });
  return c.body(body, err.status as 400, headers);
}
