import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request } from 'undici';
import { startMirror, type Mirror } from '../helpers/mirror.ts';

const TOKEN = 'integration-admin-token';
let tmp: string;
let gantry: Mirror;

before(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'gantry-admin-'));
  const tokenFile = join(tmp, 'admin-token');
  await writeFile(tokenFile, `${TOKEN}\n`);
  // No upstream is contacted by the admin API: an unreachable one is enough.
  gantry = await startMirror({ upstreams: [{ host: 'docker.io', url: 'http://127.0.0.1:9' }], adminTokenFile: tokenFile });
});

after(async () => {
  await gantry?.destroy();
  await rm(tmp, { recursive: true, force: true });
});

test('a real Gantry with adminTokenFile: /admin/verify needs the bearer token, 401 OCI error otherwise', async () => {
  const ok = await request(`${gantry.url}/admin/verify`, { method: 'POST', headers: { authorization: `Bearer ${TOKEN}` } });
  assert.equal(ok.statusCode, 200);
  assert.deepEqual(((await ok.body.json()) as { bad: unknown[] }).bad, []);
  for (const headers of [{}, { authorization: 'Bearer nope' }]) {
    const res = await request(`${gantry.url}/admin/verify`, { method: 'POST', headers });
    assert.equal(res.statusCode, 401);
    assert.equal(res.headers['content-type'], 'application/json');
    assert.equal(((await res.body.json()) as { errors: { code: string }[] }).errors[0]?.code, 'UNAUTHORIZED');
  }
  // The rest of Gantry is unaffected by the admin token.
  assert.equal((await request(`${gantry.url}/healthz`)).statusCode, 200);
});
