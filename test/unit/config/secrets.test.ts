import { test } from 'node:test';
import assert from 'node:assert/strict';
import { secret } from '../../../src/config/secrets.ts';

const readFile = (p: string): string => {
  if (p === '/run/secrets/token') return 's3cret\n';
  throw new Error('ENOENT: no such file');
};

function parse(key: string, record: Record<string, unknown>, env: NodeJS.ProcessEnv = {}): { value: string | undefined; problems: string[] } {
  const problems: string[] = [];
  const s = secret('adminToken', { help: 'token' });
  const value = s.parse(record['adminToken'], key, { problems, secrets: { env, readFile }, record });
  return { value, problems };
}

test('a secret at the top level of the config: messages name the key itself, not ".key"', () => {
  assert.deepEqual(parse('adminToken', { adminTokenEnv: 'NOPE' }).problems, ['adminTokenEnv: environment variable NOPE is not set']);
  assert.deepEqual(parse('adminToken', { adminTokenFile: '/nope' }).problems, ['adminTokenFile: cannot read /nope: ENOENT: no such file']);
  assert.deepEqual(parse('adminToken', { adminToken: 'a', adminTokenFile: '/x' }).problems, ['config: set only one of adminToken, adminTokenFile']);
  assert.equal(parse('adminToken', { adminTokenFile: '/run/secrets/token' }).value, 's3cret', 'one trailing newline dropped');
  assert.equal(parse('adminToken', { adminTokenEnv: 'T' }, { T: 'from-env' }).value, 'from-env');
});

test('inside a section or an entry, messages carry its path', () => {
  assert.deepEqual(parse('auth.adminToken', { adminTokenEnv: 'NOPE' }).problems, ['auth.adminTokenEnv: environment variable NOPE is not set']);
  assert.deepEqual(parse('upstreams[0].adminToken', { adminToken: 1 }).problems, ['upstreams[0].adminToken: expected a string']);
});
