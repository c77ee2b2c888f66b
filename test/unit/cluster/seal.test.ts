import { test } from 'node:test';
import assert from 'node:assert/strict';
import { sealer } from '../../../src/cluster/seal.ts';

test('sealed values open with the same secret and purpose only, and tampering is refused', () => {
  const a = sealer('the-shared-peer-secret', 'tokens');
  const sealed = a.seal('{"cred":{"kind":"basic","header":"Basic YWxpY2U6cHc="}}');
  assert.ok(!sealed.includes('YWxpY2U6cHc'), 'the credential is not readable in the store');
  assert.equal(a.open(sealed), '{"cred":{"kind":"basic","header":"Basic YWxpY2U6cHc="}}');
  assert.notEqual(a.seal('x'), a.seal('x'), 'a fresh IV each time');
  assert.equal(sealer('another-peer-secret!!', 'tokens').open(sealed), undefined, 'another secret');
  assert.equal(sealer('the-shared-peer-secret', 'other').open(sealed), undefined, 'another purpose');
  const raw = Buffer.from(sealed, 'base64url');
  raw[raw.length - 1]! ^= 1;
  assert.equal(a.open(raw.toString('base64url')), undefined, 'a flipped bit');
  assert.equal(a.open('short'), undefined);
});
