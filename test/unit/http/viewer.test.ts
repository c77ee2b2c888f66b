import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { isAdminViewer, type AdminAccess } from '../../../src/http/viewer.ts';

const TOKEN = 's3cret-admin-token';
const bearer = (t: string): string => `Bearer ${t}`;
const admin = (remote: string, authorization: string | undefined, access: AdminAccess, requireToken: boolean): boolean =>
  isAdminViewer({ remote, authorization }, access, { requireToken });

describe('isAdminViewer', () => {
  test('the /admin rule (requireToken false): loopback, or anyone with adminRemote; then the token if one is set', () => {
    const open: AdminAccess = { adminRemote: false, adminToken: undefined };
    assert.equal(admin('127.0.0.1', undefined, open, false), true);
    assert.equal(admin('::1', undefined, open, false), true);
    assert.equal(admin('::ffff:127.0.0.1', undefined, open, false), true);
    assert.equal(admin('10.0.0.5', undefined, open, false), false);
    assert.equal(admin('10.0.0.5', undefined, { adminRemote: true, adminToken: undefined }, false), true);
    const withToken: AdminAccess = { adminRemote: false, adminToken: TOKEN };
    assert.equal(admin('127.0.0.1', bearer(TOKEN), withToken, false), true);
    assert.equal(admin('127.0.0.1', undefined, withToken, false), false);
  });

  test('requireToken: without a configured token nobody is the admin, not even loopback', () => {
    assert.equal(admin('127.0.0.1', undefined, { adminRemote: false, adminToken: undefined }, true), false);
    assert.equal(admin('127.0.0.1', bearer('anything'), { adminRemote: true, adminToken: undefined }, true), false);
  });

  test('requireToken: the right bearer from an allowed address', () => {
    const access: AdminAccess = { adminRemote: false, adminToken: TOKEN };
    assert.equal(admin('127.0.0.1', bearer(TOKEN), access, true), true);
    assert.equal(admin('127.0.0.1', `bearer  ${TOKEN} `, access, true), true, 'scheme case and spacing as RFC 7235 allows');
    assert.equal(admin('10.0.0.5', bearer(TOKEN), access, true), false, 'the token does not widen the network rule');
    assert.equal(admin('10.0.0.5', bearer(TOKEN), { ...access, adminRemote: true }, true), true);
  });

  test('anything but exactly the token is not the admin', () => {
    const access: AdminAccess = { adminRemote: true, adminToken: TOKEN };
    for (const authorization of [undefined, '', bearer(`${TOKEN}x`), bearer(TOKEN.slice(0, -1)), `Basic ${Buffer.from(`admin:${TOKEN}`).toString('base64')}`, TOKEN, `Bearer ${TOKEN} extra`]) {
      assert.equal(admin('127.0.0.1', authorization, access, true), false, String(authorization));
    }
  });
});
