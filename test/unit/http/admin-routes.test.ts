import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { Writable } from 'node:stream';
import { Hono } from 'hono';
import { createAdminRoutes, type AdminServices } from '../../../src/http/admin-routes.ts';
import type { AppEnv } from '../../../src/http/app-env.ts';
import { RegistryError, toErrorBody } from '../../../src/oci/errors.ts';
import { createLogger } from '../../../src/observability/logger.ts';

const TOKEN = 's3cret-admin-token';

/** The admin sub-app behind the same per-request variables and error mapping createApp gives it. */
function harness(o: Partial<AdminServices>): { call: (remote: string, auth?: string) => Promise<{ status: number; body: unknown }>; logs: () => string } {
  let logged = '';
  const sink = new Writable({ write(chunk: Buffer, _enc, done) { logged += chunk.toString(); done(); } });
  const log = createLogger('info', sink);
  const app = new Hono<AppEnv>();
  app.use('*', async (c, next) => {
    c.set('log', () => log);
    await next();
  });
  app.route('/admin', createAdminRoutes({ verifyCache: () => Promise.resolve({ checked: 0, bad: [] }), adminRemote: false, adminToken: undefined, ...o }));
  app.onError((err, c) => (err instanceof RegistryError ? c.json(toErrorBody(err), err.status as 400) : c.text('500', 500)));
  const call = async (remote: string, auth?: string): Promise<{ status: number; body: unknown }> => {
    const outgoing = Object.assign(new EventEmitter(), { statusCode: 0 });
    const res = await app.request('/admin/verify', { method: 'POST', headers: auth === undefined ? {} : { authorization: auth } }, { incoming: { socket: { remoteAddress: remote } }, outgoing });
    outgoing.statusCode = res.status;
    outgoing.emit('close');
    return { status: res.status, body: await res.json() };
  };
  return { call, logs: () => logged };
}

describe('admin guard', () => {
  test('loopback clients only, unless adminRemote', async () => {
    const { call } = harness({});
    assert.equal((await call('127.0.0.1')).status, 200);
    assert.equal((await call('127.0.0.2')).status, 200);
    assert.equal((await call('::1')).status, 200);
    assert.equal((await call('::ffff:127.0.0.1')).status, 200);
    const denied = await call('10.1.2.3');
    assert.equal(denied.status, 403);
    assert.deepEqual((denied.body as { errors: { code: string }[] }).errors[0]?.code, 'DENIED');
    assert.equal((await call('::ffff:10.1.2.3')).status, 403);
    assert.equal((await harness({ adminRemote: true }).call('10.1.2.3')).status, 200);
  });

  test('with adminToken: right token 200, wrong or missing 401 with an OCI error', async () => {
    const { call } = harness({ adminToken: TOKEN });
    assert.equal((await call('127.0.0.1', `Bearer ${TOKEN}`)).status, 200);
    for (const auth of [undefined, 'Bearer wrong', `Bearer ${TOKEN}x`, `Basic ${TOKEN}`, `Bearer ${TOKEN.slice(0, -1)}`, 'Bearer ']) {
      const r = await call('127.0.0.1', auth);
      assert.equal(r.status, 401, `auth ${String(auth)}`);
      assert.equal((r.body as { errors: { code: string }[] }).errors[0]?.code, 'UNAUTHORIZED');
    }
    // The token does not open the door for a remote client.
    assert.equal((await call('10.1.2.3', `Bearer ${TOKEN}`)).status, 403);
  });

  test('every admin request is logged (method, path, status, remote), never the token', async () => {
    const { call, logs } = harness({ adminToken: TOKEN });
    await call('127.0.0.1', `Bearer ${TOKEN}`);
    await call('127.0.0.1', 'Bearer wrong-guess');
    await call('10.1.2.3', `Bearer ${TOKEN}`);
    const lines = logs().trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    assert.deepEqual(lines.map((l) => [l['method'], l['path'], l['status'], l['remote']]), [
      ['POST', '/admin/verify', 200, '127.0.0.1'],
      ['POST', '/admin/verify', 401, '127.0.0.1'],
      ['POST', '/admin/verify', 403, '10.1.2.3'],
    ]);
    assert.ok(!logs().includes(TOKEN) && !logs().includes('wrong-guess'), 'no token in the log');
  });
});
