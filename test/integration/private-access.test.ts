// Private repositories behind a real token-auth Distribution registry: clients
// log in through Gantry's own token endpoint, and nothing fetched with one
// client's credential is served to a client the upstream would refuse.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { request } from 'undici';
import { buildImage, MANIFEST_ACCEPT, type BuiltImage } from '../fixtures/images.ts';
import { startCountingForwarder, type CountingForwarder } from '../helpers/counting-forwarder.ts';
import { metricValue, startMirror, type Mirror } from '../helpers/mirror.ts';
import { pushImageWithToken, startTokenRegistry, type TokenRegistry } from '../helpers/token-registry.ts';

const execFileP = promisify(execFile);
const skopeo = (...args: string[]) => execFileP('skopeo', ['--insecure-policy', ...args], { timeout: 60_000, maxBuffer: 16 << 20 });

const ALICE = 'alice:alice-pw';
const BOB = 'bob:bob-pw';
const priv: BuiltImage = buildImage({ format: 'docker', seed: 'private-app' });
const pub: BuiltImage = buildImage({ format: 'oci', seed: 'public-app' });

let reg: TokenRegistry;
let fwd: CountingForwarder;
let mirror: Mirror;
let tmp: string;
let host: string;

before(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'gantry-private-'));
  reg = await startTokenRegistry({ users: { alice: 'alice-pw', bob: 'bob-pw', carol: 'carol-pw' } });
  await pushImageWithToken(reg, 'private/app', 'v1', priv);
  await pushImageWithToken(reg, 'public/app', 'v1', pub);
  fwd = await startCountingForwarder({ target: reg.url });
  mirror = await startMirror({
    upstreams: [
      { host: 'docker.io', url: 'http://127.0.0.1:9' }, // never used here
      { host: 'registry.internal:5000', url: fwd.url, prefix: 'internal' },
    ],
    auth: { accessCheckTtlSeconds: 60 },
  });
  host = mirror.url.replace('http://', '');
});

after(async () => {
  await mirror?.destroy();
  await fwd?.stop();
  await reg?.stop();
  await rm(tmp, { recursive: true, force: true });
});

const inspect = (ref: string, creds?: string) =>
  skopeo('inspect', '--raw', '--tls-verify=false', ...(creds ? ['--creds', creds] : []), `docker://${host}/${ref}`);

async function tokenFor(creds: string | undefined, scope: string): Promise<string> {
  const headers: Record<string, string> = creds ? { authorization: `Basic ${Buffer.from(creds).toString('base64')}` } : {};
  const res = await request(`${mirror.url}/token?service=registry.internal:5000&scope=${encodeURIComponent(scope)}`, { headers });
  const body = (await res.body.json()) as { token?: string };
  assert.equal(res.statusCode, 200, `token for ${creds ?? 'anonymous'}`);
  return body.token ?? '';
}

describe('private images through a path-prefixed upstream with token auth', () => {
  test('anonymous clients get 401 with a challenge to Gantry, for an uncached private image', async () => {
    const res = await request(`${mirror.url}/v2/internal/private/app/manifests/v1`, { headers: { accept: MANIFEST_ACCEPT } });
    const body = (await res.body.json()) as { errors: Array<{ code: string }> };
    assert.equal(res.statusCode, 401);
    assert.equal(body.errors[0]?.code, 'UNAUTHORIZED');
    assert.equal(
      res.headers['www-authenticate'],
      `Bearer realm="${mirror.url}/token",service="registry.internal:5000",scope="repository:internal/private/app:pull"`,
    );
    await assert.rejects(inspect('internal/private/app:v1'));
  });

  test('skopeo with valid upstream credentials pulls the private image; bad credentials fail', async () => {
    const { stdout } = await inspect('internal/private/app:v1', ALICE);
    assert.ok(Buffer.from(stdout).equals(priv.manifest), 'byte-identical manifest');
    const dest = await mkdtemp(join(tmp, 'copy-'));
    await skopeo('copy', '--src-tls-verify=false', '--src-creds', ALICE, `docker://${host}/internal/private/app:v1`, `dir:${dest}`);
    await assert.rejects(inspect('internal/private/app:v1', 'alice:wrong'), /unauthorized|denied|401|authentication/i);
    // Gantry relayed alice's credentials with the upstream's own scope, not the prefixed one.
    const relayed = reg.tokenRequests.filter((r) => r.account === 'alice');
    assert.ok(relayed.length > 0);
    for (const r of relayed) for (const s of r.scope) assert.match(s, /^repository:private\/app:pull/);
  });

  test('cached private content is not served to anonymous clients or bad credentials, and is to another valid user', async () => {
    const layer = priv.blobs[1]!;
    const blobUrl = `${mirror.url}/v2/internal/private/app/blobs/${layer.digest}`;
    // Cached by alice's pull above:
    assert.equal(fwd.count({ method: 'GET', pathIncludes: layer.digest }), 1);
    const anon = await request(blobUrl);
    await anon.body.dump();
    assert.equal(anon.statusCode, 401, 'anonymous: 401');
    assert.match(String(anon.headers['www-authenticate']), /realm=".*\/token"/);
    const anonToken = await tokenFor(undefined, 'repository:internal/private/app:pull');
    const anon2 = await request(blobUrl, { headers: { authorization: `Bearer ${anonToken}` } });
    await anon2.body.dump();
    assert.equal(anon2.statusCode, 401, 'anonymous Gantry token: 401');
    const badRes = await request(`${mirror.url}/token?service=registry.internal:5000&scope=repository:internal/private/app:pull`, {
      headers: { authorization: `Basic ${Buffer.from('mallory:nope').toString('base64')}` },
    });
    await badRes.body.dump();
    assert.equal(badRes.statusCode, 401, 'bad credentials are refused at the token endpoint');
    const bobToken = await tokenFor(BOB, 'repository:internal/private/app:pull');
    const heads = fwd.count({ method: 'HEAD', pathIncludes: layer.digest });
    const bob = await request(blobUrl, { headers: { authorization: `Bearer ${bobToken}` } });
    const bytes = Buffer.from(await bob.body.arrayBuffer());
    assert.equal(bob.statusCode, 200);
    assert.equal(bob.headers['x-cache'], 'HIT');
    assert.ok(bytes.equals(layer.bytes));
    assert.equal(fwd.count({ method: 'HEAD', pathIncludes: layer.digest }), heads + 1, 'one cheap HEAD checked bob');
    assert.equal(fwd.count({ method: 'GET', pathIncludes: layer.digest }), 1, 'and the blob was not fetched again');
    // The answer is remembered per credential and repository.
    const again = await request(blobUrl, { headers: { authorization: `Bearer ${bobToken}` } });
    await again.body.dump();
    assert.equal(again.statusCode, 200);
    assert.equal(fwd.count({ method: 'HEAD', pathIncludes: layer.digest }), heads + 1);
    assert.ok((await metricValue(mirror.url, 'gantry_access_checks_total', { result: 'denied' })) >= 1);
  });

  test('a token request repeating one repository costs one upstream check; more than 16 repositories is a 400', async () => {
    const basic = `Basic ${Buffer.from(BOB).toString('base64')}`;
    const before = reg.tokenRequests.length;
    const scope = encodeURIComponent('repository:internal/private/app:pull '.repeat(300).trim());
    const res = await request(`${mirror.url}/token?service=registry.internal:5000&scope=${scope}`, { headers: { authorization: basic } });
    await res.body.dump();
    assert.equal(res.statusCode, 200);
    assert.ok(reg.tokenRequests.length - before <= 2, `one check, not 300 (${reg.tokenRequests.length - before} token requests upstream)`);
    const many = Array.from({ length: 17 }, (_, i) => `repository:internal/r${i}:pull`).join(' ');
    const tooMany = await request(`${mirror.url}/token?service=registry.internal:5000&scope=${encodeURIComponent(many)}`, { headers: { authorization: basic } });
    const body = (await tooMany.body.json()) as { errors: Array<{ code: string; message: string }> };
    assert.equal(tooMany.statusCode, 400);
    assert.match(body.errors[0]?.message ?? '', /at most 16 repositories/);
  });

  test('a containerd-style OAuth2 POST login gets a token that works for the private image', async () => {
    const res = await request(`${mirror.url}/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({
        grant_type: 'password', username: 'bob', password: 'bob-pw', service: 'registry.internal:5000',
        scope: 'repository:internal/private/app:pull', client_id: 'containerd-client',
      }).toString(),
    });
    const body = (await res.body.json()) as { access_token: string; refresh_token?: string };
    assert.equal(res.statusCode, 200);
    assert.ok(body.refresh_token);
    const m = await request(`${mirror.url}/v2/internal/private/app/manifests/v1`, { headers: { authorization: `Bearer ${body.access_token}`, accept: MANIFEST_ACCEPT } });
    assert.equal(m.statusCode, 200);
    assert.ok(Buffer.from(await m.body.arrayBuffer()).equals(priv.manifest));
    const bad = await request(`${mirror.url}/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ grant_type: 'password', username: 'bob', password: 'x', service: 'registry.internal:5000', scope: 'repository:internal/private/app:pull' }).toString(),
    });
    await bad.body.dump();
    assert.equal(bad.statusCode, 401);
  });

  test('public content fetched with a credential is then served to anonymous clients (checked once)', async () => {
    const { stdout } = await inspect('internal/public/app:v1', ALICE);
    assert.ok(Buffer.from(stdout).equals(pub.manifest));
    const before = fwd.count({ method: 'GET', pathIncludes: '/manifests/' });
    const anon = await inspect('internal/public/app:v1');
    assert.ok(Buffer.from(anon.stdout).equals(pub.manifest));
    assert.equal(fwd.count({ method: 'GET', pathIncludes: '/manifests/' }), before, 'served from cache after a HEAD check');
  });

  test('a client token passed straight through reaches the upstream unchanged (no prefix rename with ns routing)', async () => {
    const tok = await request(`${reg.tokenUrl}?service=${encodeURIComponent(reg.service)}&scope=repository:private/app:pull`, {
      headers: { authorization: `Basic ${Buffer.from(ALICE).toString('base64')}` },
    });
    const { token } = (await tok.body.json()) as { token: string };
    const n = fwd.requests.length;
    const res = await request(`${mirror.url}/v2/private/app/manifests/${priv.manifestDigest}?ns=registry.internal:5000`, {
      headers: { authorization: `Bearer ${token}`, accept: MANIFEST_ACCEPT },
    });
    await res.body.dump();
    assert.equal(res.statusCode, 200);
    const sent = fwd.requests.slice(n).find((r) => r.path.includes('/manifests/'));
    if (sent) assert.equal(sent.headers['authorization'], `Bearer ${token}`);
  });

  test('when the upstream cannot be asked, restricted content fails closed', async () => {
    const layer = priv.blobs[0]!;
    fwd.setTarget('http://127.0.0.1:9');
    try {
      // carol (valid upstream credentials) is unknown to the memo, so the guard must ask, and cannot.
      const cred = `Basic ${Buffer.from('carol:carol-pw').toString('base64')}`;
      const res = await request(`${mirror.url}/v2/internal/private/app/blobs/${layer.digest}`, { headers: { authorization: cred } });
      const body = (await res.body.json()) as { errors: Array<{ code: string }> };
      assert.equal(res.statusCode, 503);
      assert.equal(body.errors[0]?.code, 'UNAVAILABLE');
    } finally {
      fwd.setTarget(reg.url);
    }
  });
});

describe('client authentication for Gantry itself (htpasswd)', () => {
  test('only Gantry users get in; skopeo logs in through the /v2/ challenge', async () => {
    const htpasswd = join(tmp, 'htpasswd');
    const { default: bcrypt } = await import('bcryptjs');
    await writeFile(htpasswd, `ops:${bcrypt.hashSync('ops-pw', 4)}\n`);
    const locked = await startMirror({
      upstreams: [{ host: 'registry.internal:5000', url: fwd.url, prefix: 'internal' }],
      auth: { htpasswdFile: htpasswd },
    });
    try {
      const lhost = locked.url.replace('http://', '');
      const anon = await request(`${locked.url}/v2/internal/public/app/manifests/v1`);
      await anon.body.dump();
      assert.equal(anon.statusCode, 401);
      await assert.rejects(skopeo('inspect', '--raw', '--tls-verify=false', `docker://${lhost}/internal/public/app:v1`));
      await assert.rejects(skopeo('inspect', '--raw', '--tls-verify=false', '--creds', 'ops:bad', `docker://${lhost}/internal/public/app:v1`));
      const ok = await skopeo('inspect', '--raw', '--tls-verify=false', '--creds', 'ops:ops-pw', `docker://${lhost}/internal/public/app:v1`);
      assert.ok(Buffer.from(ok.stdout).equals(pub.manifest));
    } finally {
      await locked.destroy();
    }
  });
});
