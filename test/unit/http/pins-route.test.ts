// /admin/pins and /admin/import's pin= over a real cache, behind the admin sub-app as createApp mounts it.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { Hono } from 'hono';
import { createAdminRoutes } from '../../../src/http/admin-routes.ts';
import type { AppEnv } from '../../../src/http/app-env.ts';
import type { Digest } from '../../../src/oci/digest.ts';
import { RegistryError, toErrorBody } from '../../../src/oci/errors.ts';
import { createLogger } from '../../../src/observability/logger.ts';
import type { ImportTarget } from '../../../src/transfer/import.ts';
import { tempCache, type TempCache } from '../support.ts';

const D1 = `sha256:${'a'.repeat(64)}` as Digest;
type Answer = { status: number; body: unknown };

async function withAdmin(fn: (call: (method: string, path: string) => Promise<Answer>, c: TempCache, imported: ImportTarget[]) => Promise<void>): Promise<void> {
  const c = await tempCache();
  const imported: ImportTarget[] = [];
  const log = createLogger('silent');
  const app = new Hono<AppEnv>();
  app.use('*', async (ctx, next) => {
    ctx.set('log', () => log);
    await next();
  });
  app.route('/admin', createAdminRoutes({
    verifyCache: () => Promise.resolve({}), adminRemote: false, adminToken: undefined,
    pinSource: { cache: c.cache, config: { upstreams: [{ host: 'docker.io' }], defaultUpstream: 'docker.io' } },
    imports: { upstreamHosts: () => ['docker.io'], defaultUpstream: 'docker.io', importTar: (_b, target) => { imported.push(target); return Promise.resolve({ archive: 'x', format: 'oci', images: [], blobsNew: 0, blobsPresent: 0, bytesNew: 0, manifests: 0 }); } },
  }));
  app.onError((err, ctx) => (err instanceof RegistryError ? ctx.json(toErrorBody(err), err.status as 400) : ctx.text(String(err), 500)));
  const call = async (method: string, path: string): Promise<Answer> => {
    const outgoing = Object.assign(new EventEmitter(), { statusCode: 0 });
    const res = await app.request(path, { method, ...(method === 'POST' ? { body: 'tar' } : {}) }, { incoming: { socket: { remoteAddress: '127.0.0.1' } }, outgoing });
    return { status: res.status, body: await res.json() };
  };
  try {
    await fn(call, c, imported);
  } finally {
    await c.close();
  }
}

const errorOf = (a: Answer): { code?: string; message?: string } => (a.body as { errors: Array<{ code: string; message: string }> }).errors[0] ?? {};

describe('/admin/pins', () => {
  test('GET lists the pins; DELETE ?ref= releases one and answers with it; a second DELETE is a 404 naming the ref', async () => {
    await withAdmin(async (call, c) => {
      assert.deepEqual(await call('GET', '/admin/pins'), { status: 200, body: [] });
      await c.cache.pin({ upstream: 'docker.io', repo: 'library/app', reference: '1', digests: [D1], pinnedAt: 0 });
      const listed = await call('GET', '/admin/pins');
      assert.deepEqual(listed.body, [{ ref: 'docker.io/library/app:1', upstream: 'docker.io', repository: 'library/app', reference: '1', digests: 1, cachedDigests: 0, bytes: 0, pinnedAt: '1970-01-01T00:00:00.000Z' }]);
      const released = await call('DELETE', '/admin/pins?ref=app:1');
      assert.equal(released.status, 200);
      assert.equal((released.body as { ref: string }).ref, 'docker.io/library/app:1');
      assert.deepEqual(c.cache.pins(), []);
      const again = await call('DELETE', '/admin/pins?ref=app:1');
      assert.equal(again.status, 404);
      assert.equal(errorOf(again).code, 'MANIFEST_UNKNOWN');
      assert.equal(errorOf(again).message, 'app:1 is not pinned');
    });
  });

  test('DELETE without a ref, or with one that does not parse, is a 400 NAME_INVALID', async () => {
    await withAdmin(async (call) => {
      for (const path of ['/admin/pins', '/admin/pins?ref=', '/admin/pins?ref=Not%20A%20Ref']) {
        const r = await call('DELETE', path);
        assert.equal(r.status, 400, path);
        assert.equal(errorOf(r).code, 'NAME_INVALID', path);
      }
      assert.match(errorOf(await call('DELETE', '/admin/pins?ref=Not%20A%20Ref')).message ?? '', /"Not A Ref"/);
    });
  });
});

describe('/admin/import pin=', () => {
  test('pin=true pins, absent or false does not, anything else is a 400', async () => {
    await withAdmin(async (call, _c, imported) => {
      assert.equal((await call('POST', '/admin/import?pin=true')).status, 200);
      assert.equal((await call('POST', '/admin/import?pin=false')).status, 200);
      assert.equal((await call('POST', '/admin/import')).status, 200);
      assert.deepEqual(imported.map((t) => t.pin), [true, undefined, undefined]);
      const bad = await call('POST', '/admin/import?pin=yes');
      assert.equal(bad.status, 400);
      assert.match(errorOf(bad).message ?? '', /pin="yes"/);
    });
  });
});
