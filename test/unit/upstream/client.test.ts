// UpstreamClient's typed registry calls against undici's MockAgent: the paths
// and headers it sends, how it reads answers, the token dance and redirects.
import { test, describe, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import type { MockInterceptor } from 'undici/types/mock-interceptor.js';
import { digestOf } from '../../../src/oci/digest.ts';
import { RegistryError } from '../../../src/oci/errors.ts';
import { UpstreamStatusError } from '../../../src/upstream/upstream-error.ts';
import { mockUpstream, UPSTREAM_URL, type MockedUpstream } from '../support.ts';

const bytes = Buffer.from('a blob of bytes');
const digest = digestOf(bytes);
const none = { kind: 'none' } as const;

let up: MockedUpstream;
afterEach(async () => {
  up.agent.assertNoPendingInterceptors();
  await up.close();
});

/** Records the headers of each request an interceptor answers. */
function recording(status: number, data: string | Buffer, headers: Record<string, string> = {}) {
  const seen: Array<Record<string, string>> = [];
  const reply = (opts: MockInterceptor.MockResponseCallbackOptions) => {
    seen.push(Object.fromEntries(Object.entries(opts.headers as Record<string, string>).map(([k, v]) => [k.toLowerCase(), v])));
    return { statusCode: status, data, responseOptions: { headers } };
  };
  return { seen, reply };
}

describe('UpstreamClient: blobs', () => {
  test('getBlob GETs /v2/<repo>/blobs/<digest> and returns the size and body', async () => {
    up = mockUpstream();
    up.pool.intercept({ path: `/v2/library/alpine/blobs/${digest}`, method: 'GET' }).reply(200, bytes, { headers: { 'content-length': String(bytes.length) } });
    const res = await up.client.getBlob('library/alpine', digest, { auth: none });
    assert.equal(res.size, bytes.length);
    assert.ok(Buffer.from(await res.body.arrayBuffer()).equals(bytes));
  });

  test('a resume sends Range and accepts only a 206 whose Content-Range starts at the offset', async () => {
    up = mockUpstream();
    const ok = recording(206, bytes.subarray(5), { 'content-range': `bytes 5-${bytes.length - 1}/${bytes.length}` });
    up.pool.intercept({ path: `/v2/r/blobs/${digest}`, method: 'GET' }).reply(ok.reply);
    const res = await up.client.getBlob('r', digest, { auth: none, offset: 5 });
    assert.equal(ok.seen[0]?.['range'], 'bytes=5-');
    assert.ok(Buffer.from(await res.body.arrayBuffer()).equals(bytes.subarray(5)));
    up.pool.intercept({ path: `/v2/r/blobs/${digest}`, method: 'GET' }).reply(206, 'x', { headers: { 'content-range': 'bytes 0-0/15' } });
    await assert.rejects(up.client.getBlob('r', digest, { auth: none, offset: 5 }), /wrong range/);
    up.pool.intercept({ path: `/v2/r/blobs/${digest}`, method: 'GET' }).reply(200, bytes);
    await assert.rejects(up.client.getBlob('r', digest, { auth: none, offset: 5 }), (err: unknown) => err instanceof UpstreamStatusError && err.upstreamStatus === 200);
  });

  test('a 404 is BLOB_UNKNOWN with the upstream status kept; the OCI code of the body is passed on', async () => {
    up = mockUpstream();
    up.pool.intercept({ path: `/v2/r/blobs/${digest}`, method: 'GET' }).reply(404, JSON.stringify({ errors: [{ code: 'NAME_UNKNOWN', message: 'x' }] }));
    await assert.rejects(up.client.getBlob('r', digest, { auth: none }), (err: unknown) => err instanceof UpstreamStatusError && err.upstreamStatus === 404 && err.code === 'NAME_UNKNOWN');
    up.pool.intercept({ path: `/v2/r/blobs/${digest}`, method: 'HEAD' }).reply(404, '');
    await assert.rejects(up.client.headBlob('r', digest, { auth: none }), (err: unknown) => err instanceof RegistryError && err.code === 'BLOB_UNKNOWN');
  });

  test('headBlob returns the length', async () => {
    up = mockUpstream();
    up.pool.intercept({ path: `/v2/r/blobs/${digest}`, method: 'HEAD' }).reply(200, '', { headers: { 'content-length': '1234' } });
    assert.deepEqual(await up.client.headBlob('r', digest, { auth: none }), { size: 1234 });
  });
});

describe('UpstreamClient: manifests, tags, referrers, login', () => {
  test('headManifest sends Accept and reads digest, media type (parameters dropped) and length', async () => {
    up = mockUpstream();
    const r = recording(200, '', { 'docker-content-digest': digest, 'content-type': 'application/vnd.oci.image.manifest.v1+json; charset=utf-8', 'content-length': '321' });
    up.pool.intercept({ path: '/v2/r/manifests/latest', method: 'HEAD' }).reply(r.reply);
    const head = await up.client.headManifest('r', 'latest', { auth: none, accept: 'application/vnd.oci.image.manifest.v1+json' });
    assert.deepEqual(head, { digest, mediaType: 'application/vnd.oci.image.manifest.v1+json', size: 321 });
    assert.equal(r.seen[0]?.['accept'], 'application/vnd.oci.image.manifest.v1+json');
  });

  test('getManifest returns the body; a head without headers gives undefined fields', async () => {
    up = mockUpstream();
    up.pool.intercept({ path: `/v2/r/manifests/${digest}`, method: 'GET' }).reply(200, bytes);
    const res = await up.client.getManifest('r', digest, { auth: none, accept: '*/*' });
    assert.equal(res.digest, undefined);
    assert.equal(res.mediaType, undefined);
    assert.ok(Buffer.from(await res.body.arrayBuffer()).equals(bytes));
  });

  test('listTags and getReferrers build their queries and pass on the listing headers', async () => {
    up = mockUpstream();
    up.pool.intercept({ path: '/v2/r/tags/list?n=2&last=a', method: 'GET' }).reply(200, '{"tags":["b","c"]}', {
      headers: { 'content-type': 'application/json', link: '</v2/r/tags/list?n=2&last=c>; rel="next"', 'x-other': 'dropped' },
    });
    const tags = await up.client.listTags('r', { auth: none, n: '2', last: 'a' });
    assert.deepEqual(tags.headers, { 'content-type': 'application/json', link: '</v2/r/tags/list?n=2&last=c>; rel="next"' });
    assert.equal(await tags.body.text(), '{"tags":["b","c"]}');
    up.pool.intercept({ path: `/v2/r/referrers/${digest}?artifactType=application%2Fx.sig`, method: 'GET' }).reply(200, '{}', { headers: { 'oci-filters-applied': 'artifactType' } });
    const refs = await up.client.getReferrers('r', digest, { auth: none, artifactType: 'application/x.sig' });
    assert.deepEqual(refs.headers, { 'oci-filters-applied': 'artifactType' });
    await refs.body.dump();
    up.pool.intercept({ path: '/v2/r/tags/list', method: 'GET' }).reply(404, '');
    await assert.rejects(up.client.listTags('r', { auth: none }), (err: unknown) => err instanceof RegistryError && err.code === 'NAME_UNKNOWN');
  });

  test('acceptsCredential is false only when the upstream refuses (401/403)', async () => {
    up = mockUpstream();
    const basic = { kind: 'basic', header: `Basic ${Buffer.from('u:p').toString('base64')}`, username: 'u' } as const;
    up.pool.intercept({ path: '/v2/', method: 'GET' }).reply(200, '{}'); // learns: no auth needed
    up.pool.intercept({ path: '/v2/', method: 'GET' }).reply(403, '');
    assert.equal(await up.client.acceptsCredential('', basic), false);
    up.pool.intercept({ path: '/v2/', method: 'GET' }).reply(200, '{}');
    assert.equal(await up.client.acceptsCredential('', basic), true);
  });
});

describe('UpstreamClient: auth and redirects', () => {
  test('a 401 with a bearer challenge: one token from the realm (scoped to the repository), then the retry carries it', async () => {
    up = mockUpstream();
    const first = recording(401, '', { 'www-authenticate': `Bearer realm="${UPSTREAM_URL}/token",service="registry.test"` });
    up.pool.intercept({ path: `/v2/r/blobs/${digest}`, method: 'HEAD' }).reply(first.reply);
    up.pool.intercept({ path: '/token?service=registry.test&scope=repository%3Ar%3Apull', method: 'GET' }).reply(200, { token: 'T1', expires_in: 300 });
    const retry = recording(200, '', { 'content-length': '15' });
    up.pool.intercept({ path: `/v2/r/blobs/${digest}`, method: 'HEAD' }).reply(retry.reply);
    assert.deepEqual(await up.client.headBlob('r', digest, { auth: none }), { size: 15 });
    assert.equal(first.seen[0]?.['authorization'], undefined);
    assert.equal(retry.seen[0]?.['authorization'], 'Bearer T1');
    // The token is cached: the next call sends it up front, no new token request.
    const again = recording(200, '', { 'content-length': '15' });
    up.pool.intercept({ path: `/v2/r/blobs/${digest}`, method: 'HEAD' }).reply(again.reply);
    await up.client.headBlob('r', digest, { auth: none });
    assert.equal(again.seen[0]?.['authorization'], 'Bearer T1');
  });

  test('a client\'s own bearer token is passed through and its 401 comes back with the challenge', async () => {
    up = mockUpstream();
    const r = recording(401, '', { 'www-authenticate': 'Bearer realm="https://auth.example/token"' });
    up.pool.intercept({ path: `/v2/r/blobs/${digest}`, method: 'HEAD' }).reply(r.reply);
    await assert.rejects(
      up.client.headBlob('r', digest, { auth: { kind: 'bearer', header: 'Bearer client-token' } }),
      (err: unknown) => err instanceof RegistryError && err.code === 'UNAUTHORIZED' && err.headers['WWW-Authenticate'] === 'Bearer realm="https://auth.example/token"',
    );
    assert.equal(r.seen[0]?.['authorization'], 'Bearer client-token');
  });

  test('a redirect to another origin is followed without Authorization', async () => {
    up = mockUpstream({ token: 'static' });
    const first = recording(307, '', { location: 'http://cdn.test/blob?sig=x' });
    up.pool.intercept({ path: `/v2/r/blobs/${digest}`, method: 'GET' }).reply(first.reply);
    const cdn = recording(200, bytes, { 'content-length': String(bytes.length) });
    up.agent.get('http://cdn.test').intercept({ path: '/blob?sig=x', method: 'GET' }).reply(cdn.reply);
    const res = await up.client.getBlob('r', digest, { auth: none });
    assert.ok(Buffer.from(await res.body.arrayBuffer()).equals(bytes));
    assert.equal(first.seen[0]?.['authorization'], 'Bearer static');
    assert.equal(cdn.seen[0]?.['authorization'], undefined);
  });

  test('a network failure is a 502 and counted as status 0', async () => {
    up = mockUpstream();
    up.pool.intercept({ path: `/v2/r/blobs/${digest}`, method: 'HEAD' }).replyWithError(Object.assign(new Error('refused'), { code: 'ECONNREFUSED' }));
    await assert.rejects(up.client.headBlob('r', digest, { auth: none }), (err: unknown) => err instanceof RegistryError && err.status === 502);
    const text = await up.metrics.registry.metrics();
    assert.match(text, /gantry_upstream_requests_total\{upstream="registry.test",method="HEAD",status="0"\} 1/);
  });
});
