import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { isAdminViewer, type AdminAccess } from '../../../src/http/viewer.ts';

const TOKEN = 's3cret-admin-token';
const bearer = (t: string): string => `Bearer ${t}`;
const admin = (remote: string, authorization: string | undefined, access: AdminAccess): boolean => isAdminViewer({ remote, authorization }, access);

describe('isAdminViewer', () => {
  test('the /admin rule: loopback, or anyone with adminRemote; then the token if one is set', () => {
    const open: AdminAccess = { adminRemote: false, adminToken: undefined };
    assert.equal(admin('127.0.0.1', undefined, open), true);
    assert.equal(admin('::1', undefined, open), true);
    assert.equal(admin('::ffff:127.0.0.1', undefined, open), true);
    assert.equal(admin('10.0.0.5', undefined, open), false);
    assert.equal(admin('10.0.0.5', undefined, { adminRemote: true, adminToken: undefined }), true);
    const withToken: AdminAccess = { adminRemote: false, adminToken: TOKEN };
    assert.equal(admin('127.0.0.1', bearer(TOKEN), withToken), true);
    assert.equal(admin('127.0.0.1', undefined, withToken), false);
  });

  test('the right bearer from an allowed address', () => {
    const access: AdminAccess = { adminRemote: false, adminToken: TOKEN };
    assert.equal(admin('127.0.0.1', `bearer  ${TOKEN} `, access), true, 'scheme case and spacing as RFC 7235 allows');
    assert.equal(admin('10.0.0.5', bearer(TOKEN), access), false, 'the token does not widen the network rule');
    assert.equal(admin('10.0.0.5', bearer(TOKEN), { ...access, adminRemote: true }), true);
  });

  test('anything but exactly the token is not the admin', () => {
    const access: AdminAccess = { adminRemote: true, adminToken: TOKEN };
    for (const authorization of [undefined, '', bearer(`${TOKEN}x`), bearer(TOKEN.slice(0, -1)), `Basic ${Buffer.from(`admin:${TOKEN}`).toString('base64')}`, TOKEN, `Bearer ${TOKEN} extra`]) {
      assert.equal(admin('127.0.0.1', authorization, access), false, String(authorization));
    }
  });
});
