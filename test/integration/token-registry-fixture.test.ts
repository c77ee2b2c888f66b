// Self-test of the token-auth registry fixture and the forward proxy: a real docker-registry must
// accept the fixture's JWTs exactly as the policy says, real clients (skopeo, undici) must get through.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { ProxyAgent, fetch as undiciFetch, request as undiciRequest } from 'undici';
import { MANIFEST_ACCEPT, buildImage, buildIndex } from '../fixtures/images.ts';
import type { BuiltImage, BuiltIndex } from '../fixtures/images.ts';
import { decodeJwt, fetchToken, pushImageWithToken, startTokenRegistry } from '../helpers/token-registry.ts';
import type { TokenRegistry } from '../helpers/token-registry.ts';
import { startHttpProxy } from '../helpers/http-proxy.ts';
import type { HttpProxy } from '../helpers/http-proxy.ts';

const execFileP = promisify(execFile);

const skopeo = async (...args: string[]): Promise<string> =>
  (await execFileP('skopeo', ['--insecure-policy', ...args], { timeout: 60_000, maxBuffer: 16 << 20 })).stdout;

const USER = { username: 'alice', password: 'alice-secret' };

let reg: TokenRegistry;
let proxy: HttpProxy;
const pub: BuiltImage = buildImage({ format: 'docker', seed: 'token-public' });
const priv: BuiltIndex = buildIndex({
  format: 'oci',
  seed: 'token-private',
  platforms: [
    { os: 'linux', arch: 'amd64' },
    { os: 'linux', arch: 'arm64' },
  ],
});

before(async () => {
  reg = await startTokenRegistry({ users: { [USER.username]: USER.password } });
  proxy = await startHttpProxy();
  await pushImageWithToken(reg, 'public/x', 'v1', pub);
  await pushImageWithToken(reg, 'private/y', 'v1', priv);
});

after(async () => {
  await proxy?.stop();
  await reg?.stop();
});

const getManifest = (repo: string, ref: string, token?: string): Promise<Response> =>
  fetch(`${reg.url}/v2/${repo}/manifests/${ref}`, {
    headers: { accept: MANIFEST_ACCEPT, ...(token !== undefined ? { authorization: `Bearer ${token}` } : {}) },
    signal: AbortSignal.timeout(10_000),
  });

test('the push went through the token server as pushAuth with push scope', () => {
  const pushes = reg.tokenRequests.filter((r) => r.account === reg.pushAuth.username);
  assert.deepEqual(
    pushes.map((r) => [r.method, r.scope, r.status]),
    [
      ['GET', ['repository:public/x:pull,push'], 200],
      ['GET', ['repository:private/y:pull,push'], 200],
    ],
  );
  assert.notEqual(reg.pushAuth.username, USER.username);
});

test('registry challenges with the token realm and service', async () => {
  const res = await fetch(`${reg.url}/v2/`, { signal: AbortSignal.timeout(10_000) });
  await res.arrayBuffer();
  assert.equal(res.status, 401);
  assert.equal(res.headers.get('www-authenticate'), `Bearer realm="${reg.tokenUrl}",service="${reg.service}"`);

  const m = await getManifest('public/x', 'v1');
  await m.arrayBuffer();
  assert.equal(m.status, 401);
  assert.match(m.headers.get('www-authenticate') ?? '', /scope="repository:public\/x:pull"/);
});

test('JWT shape: ES256 with x5c, claims iss/sub/aud/exp/nbf/iat/jti/access', async () => {
  const { token, body } = await fetchToken(reg, { scope: ['repository:public/x:pull', 'repository:private/y:pull'] });
  assert.equal(body['access_token'], token);
  assert.equal(typeof body['expires_in'], 'number');
  assert.equal(typeof body['issued_at'], 'string');
  const { header, claims } = decodeJwt(token);
  assert.equal(header['alg'], 'ES256');
  assert.ok(Array.isArray(header['x5c']) && header['x5c'].length === 1);
  assert.equal(claims['iss'], reg.issuer);
  assert.equal(claims['aud'], reg.service);
  assert.equal(claims['sub'], '');
  for (const k of ['exp', 'nbf', 'iat']) assert.equal(typeof claims[k], 'number', k);
  assert.equal(typeof claims['jti'], 'string');
  // anonymous: the private scope is silently dropped
  assert.deepEqual(claims.access, [{ type: 'repository', name: 'public/x', actions: ['pull'] }]);
});

test('anonymous skopeo inspect of a public repository works', async () => {
  const before = reg.tokenRequests.length;
  const out = JSON.parse(await skopeo('inspect', '--no-creds', '--tls-verify=false', `docker://${reg.host}/public/x:v1`)) as { Digest: string };
  assert.equal(out.Digest, pub.manifestDigest);
  const mine = reg.tokenRequests.slice(before);
  assert.ok(mine.length > 0);
  assert.ok(mine.every((r) => r.account === undefined && r.status === 200));
  assert.ok(mine.some((r) => r.scope.includes('repository:public/x:pull')), JSON.stringify(mine));
});

test('anonymous skopeo inspect of a private repository fails (empty access list → registry 401)', async () => {
  const before = reg.tokenRequests.length;
  await assert.rejects(
    skopeo('inspect', '--no-creds', '--tls-verify=false', `docker://${reg.host}/private/y:v1`),
    (err: Error) => /reading manifest v1 in .*private\/y: .*unauthorized: authentication required/s.test(err.message),
  );
  const mine = reg.tokenRequests.slice(before);
  assert.ok(mine.some((r) => r.account === undefined && r.status === 200 && r.scope.includes('repository:private/y:pull')), JSON.stringify(mine));

  const { token } = await fetchToken(reg, { scope: ['repository:private/y:pull'] });
  assert.deepEqual(decodeJwt(token).claims.access, []);
  const res = await getManifest('private/y', 'v1', token);
  await res.arrayBuffer();
  assert.equal(res.status, 401);
});

test('skopeo inspect --creds of a private repository works', async () => {
  const before = reg.tokenRequests.length;
  const raw = await skopeo('inspect', '--raw', '--creds', `${USER.username}:${USER.password}`, '--tls-verify=false', `docker://${reg.host}/private/y:v1`);
  assert.equal(raw, priv.manifest.toString('utf8'));
  const mine = reg.tokenRequests.slice(before);
  assert.ok(mine.some((r) => r.account === USER.username && r.status === 200), JSON.stringify(mine));
});

test('a wrong password is a 401 from the token server, and skopeo fails', async () => {
  await assert.rejects(
    skopeo('inspect', '--creds', `${USER.username}:wrong`, '--tls-verify=false', `docker://${reg.host}/private/y:v1`),
    (err: Error) => /invalid username\/password: unauthorized: incorrect username or password/.test(err.message),
  );
  // also on a public repository: bad credentials are not downgraded to anonymous
  await assert.rejects(
    skopeo('inspect', '--creds', `${USER.username}:wrong`, '--tls-verify=false', `docker://${reg.host}/public/x:v1`),
    (err: Error) => /invalid username\/password: unauthorized: incorrect username or password/.test(err.message),
  );
  const failed = reg.tokenRequests.filter((r) => r.account === USER.username && r.status === 401);
  assert.equal(failed.length, 2, JSON.stringify(reg.tokenRequests));
  const url = new URL(reg.tokenUrl);
  url.searchParams.set('service', reg.service);
  url.searchParams.set('scope', 'repository:public/x:pull');
  const res = await fetch(url, {
    headers: { authorization: `Basic ${Buffer.from(`${USER.username}:wrong`).toString('base64')}` },
    signal: AbortSignal.timeout(10_000),
  });
  assert.equal(res.status, 401);
  assert.match(res.headers.get('content-type') ?? '', /application\/json/);
  const body = (await res.json()) as Record<string, unknown>;
  assert.equal(typeof body['details'], 'string');
  await assert.rejects(fetchToken(reg, { scope: [], auth: { username: 'nobody', password: 'x' }, method: 'POST' }), /HTTP 401/);
  const last = reg.tokenRequests.at(-1);
  assert.deepEqual(last, { method: 'POST', scope: [], grantType: 'password', clientId: 'gantry-test', account: 'nobody', status: 401 });
});

test('POST password grant (containerd OAuth2 flow) and refresh_token grant give working tokens', async () => {
  const { token, body } = await fetchToken(reg, {
    scope: ['repository:private/y:pull', 'repository:public/x:pull'],
    auth: USER,
    method: 'POST',
    clientId: 'containerd-client',
  });
  assert.equal(typeof body['refresh_token'], 'string');
  const recorded = reg.tokenRequests.at(-1);
  assert.deepEqual(recorded, {
    method: 'POST',
    scope: ['repository:private/y:pull', 'repository:public/x:pull'],
    grantType: 'password',
    clientId: 'containerd-client',
    account: USER.username,
    status: 200,
  });
  assert.equal(decodeJwt(token).claims['sub'], USER.username);
  for (const [repo, image] of [['private/y', priv], ['public/x', pub]] as const) {
    const res = await getManifest(repo, 'v1', token);
    assert.equal(res.status, 200, repo);
    assert.equal(res.headers.get('docker-content-digest'), image.manifestDigest);
    assert.deepEqual(Buffer.from(await res.arrayBuffer()), image.manifest);
  }

  const refreshed = await fetch(reg.tokenUrl, {
    method: 'POST',
    body: new URLSearchParams({
      grant_type: 'refresh_token',
      refresh_token: String(body['refresh_token']),
      client_id: 'containerd-client',
      service: reg.service,
      scope: 'repository:private/y:pull',
    }),
    signal: AbortSignal.timeout(10_000),
  });
  assert.equal(refreshed.status, 200);
  const rbody = (await refreshed.json()) as Record<string, unknown>;
  const res = await getManifest('private/y', 'v1', String(rbody['access_token']));
  await res.arrayBuffer();
  assert.equal(res.status, 200);
  assert.equal(reg.tokenRequests.at(-1)?.grantType, 'refresh_token');
  assert.equal(reg.tokenRequests.at(-1)?.account, USER.username);

  const bad = await fetch(reg.tokenUrl, {
    method: 'POST',
    body: new URLSearchParams({ grant_type: 'refresh_token', refresh_token: 'nope', client_id: 'x' }),
    signal: AbortSignal.timeout(10_000),
  });
  await bad.arrayBuffer();
  assert.equal(bad.status, 401);
});

test('ordinary users may pull but not push; the registry checks signatures', async () => {
  const { token } = await fetchToken(reg, { scope: ['repository:public/x:pull,push'], auth: USER });
  assert.deepEqual(decodeJwt(token).claims.access, [{ type: 'repository', name: 'public/x', actions: ['pull'] }]);
  await assert.rejects(pushImageWithToken(reg, 'public/x', 'v2', buildImage({ format: 'oci', seed: 'nope' }), USER), /HTTP 401/);

  // Forge more access into an anonymous token without re-signing: the registry must refuse it.
  const { token: anon } = await fetchToken(reg, { scope: ['repository:public/x:pull'] });
  const [h = '', c = '', s = ''] = anon.split('.');
  const claims = JSON.parse(Buffer.from(c, 'base64url').toString('utf8')) as Record<string, unknown>;
  claims['access'] = [{ type: 'repository', name: 'private/y', actions: ['pull'] }];
  const forged = `${h}.${Buffer.from(JSON.stringify(claims)).toString('base64url')}.${s}`;
  const res = await getManifest('private/y', 'v1', forged);
  await res.arrayBuffer();
  assert.equal(res.status, 401);
  const ok = await getManifest('public/x', 'v1', anon);
  await ok.arrayBuffer();
  assert.equal(ok.status, 200);
});

test('undici ProxyAgent tunnels to the registry with CONNECT (default), even for http://', async () => {
  proxy.reset();
  const agent = new ProxyAgent(proxy.url);
  try {
    const res = await undiciRequest(`${reg.url}/v2/`, { dispatcher: agent, signal: AbortSignal.timeout(10_000) });
    await res.body.dump();
    assert.equal(res.statusCode, 401);
    assert.match(String(res.headers['www-authenticate']), /^Bearer realm=/);
    assert.deepEqual(proxy.connects, [reg.host]);
    assert.deepEqual(proxy.requests, []);

    // the whole anonymous token dance through the proxy
    const tokenRes = await undiciFetch(`${reg.tokenUrl}?service=${reg.service}&scope=repository:public/x:pull`, { dispatcher: agent, signal: AbortSignal.timeout(10_000) });
    const { token } = (await tokenRes.json()) as { token: string };
    const m = await undiciFetch(`${reg.url}/v2/public/x/manifests/v1`, {
      dispatcher: agent,
      headers: { accept: MANIFEST_ACCEPT, authorization: `Bearer ${token}` },
      signal: AbortSignal.timeout(10_000),
    });
    assert.equal(m.status, 200);
    assert.deepEqual(Buffer.from(await m.arrayBuffer()), pub.manifest);
    assert.ok(proxy.connects.includes(new URL(reg.tokenUrl).host), JSON.stringify(proxy.connects));
  } finally {
    await agent.close();
  }
});

test('undici ProxyAgent with proxyTunnel: false sends absolute-form requests', async () => {
  proxy.reset();
  const agent = new ProxyAgent({ uri: proxy.url, proxyTunnel: false });
  try {
    const res = await undiciRequest(`${reg.url}/v2/`, { dispatcher: agent, signal: AbortSignal.timeout(10_000) });
    await res.body.dump();
    assert.equal(res.statusCode, 401);
    assert.match(String(res.headers['www-authenticate']), /^Bearer realm=/);
    const { token } = await fetchToken(reg, { scope: ['repository:public/x:pull'] });
    const head = await undiciRequest(`${reg.url}/v2/public/x/manifests/v1`, {
      method: 'HEAD',
      dispatcher: agent,
      headers: { accept: MANIFEST_ACCEPT, authorization: `Bearer ${token}` },
      signal: AbortSignal.timeout(10_000),
    });
    await head.body.dump();
    assert.equal(head.statusCode, 200);
    assert.equal(head.headers['docker-content-digest'], pub.manifestDigest);
    assert.deepEqual(proxy.requests, [`${reg.url}/v2/`, `${reg.url}/v2/public/x/manifests/v1`]);
    assert.deepEqual(proxy.connects, []);
  } finally {
    await agent.close();
  }
});

test('the proxy refuses non-loopback targets', async () => {
  proxy.reset();
  const agent = new ProxyAgent(proxy.url);
  try {
    await assert.rejects(
      undiciRequest('http://example.invalid:8080/v2/', { dispatcher: agent, signal: AbortSignal.timeout(10_000) }),
      /403/,
    );
    assert.deepEqual(proxy.connects, ['example.invalid:8080']);
  } finally {
    await agent.close();
  }
});
