import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { IncomingMessage } from 'node:http';
import { Socket } from 'node:net';
import { accelHeaders, clientAddress, forwardedHeaders, isForwarded, markForwarded, readAccel, FORWARDED_CLIENT, type AccelPlan } from '../../../src/http/accel.ts';
import { Plans, digestOfUrl, planKey } from '../../../src/serving/plans.ts';
import { servingProcessCount } from '../../../src/serving/supervisor.ts';

const D = `sha256:${'ab'.repeat(32)}`;
const D2 = `sha256:${'cd'.repeat(32)}`;

function req(method: string, url: string, headers: Record<string, string> = {}, remote = '10.0.0.7'): IncomingMessage {
  const socket = new Socket();
  Object.defineProperty(socket, 'remoteAddress', { value: remote });
  return { method, url, headers, socket } as unknown as IncomingMessage;
}

function plan(digest: string, expiresAt = Infinity): AccelPlan {
  return { file: `/c/blobs/sha256/${digest.slice(7, 9)}/${digest.slice(7)}`, size: 10, digest, headers: {}, expiresAt };
}

describe('which requests a plan can answer', () => {
  test('GET and HEAD of a blob or manifest by sha256 digest, query allowed; nothing else', () => {
    assert.equal(digestOfUrl(`/v2/library/alpine/blobs/${D}`), D);
    assert.equal(digestOfUrl(`/v2/a/b/c/manifests/${D}?ns=ghcr.io`), D);
    for (const url of [`/v2/x/manifests/latest`, `/v2/x/tags/list`, `/v2/x/blobs/sha256:${'A'.repeat(64)}`, `/v2/x/blobs/sha512:${'a'.repeat(128)}`, `/v2/blobs/${D}`, '/v2/', `/admin/x/blobs/${D}`, `/v2/x/blobs/${D}x`]) {
      assert.equal(digestOfUrl(url), undefined, url);
    }
    assert.equal(digestOfUrl(`/v2/${'a/'.repeat(1100)}blobs/${D}`), undefined, 'overlong URLs are never planned');
    assert.ok(planKey(req('GET', `/v2/x/blobs/${D}`)));
    assert.ok(planKey(req('HEAD', `/v2/x/blobs/${D}`)));
    assert.equal(planKey(req('POST', `/v2/x/blobs/${D}`)), undefined);
    assert.equal(planKey(req('GET', '/v2/x/manifests/latest')), undefined);
  });

  test('the key holds everything an answer depends on: Host, URL, credential, Accept', () => {
    const base = planKey(req('GET', `/v2/x/blobs/${D}`, { host: 'a', authorization: 'Bearer t', accept: 'm' }));
    assert.notEqual(base, planKey(req('GET', `/v2/x/blobs/${D}`, { host: 'b', authorization: 'Bearer t', accept: 'm' })));
    assert.notEqual(base, planKey(req('GET', `/v2/x/blobs/${D}`, { host: 'a', authorization: 'Bearer u', accept: 'm' })));
    assert.notEqual(base, planKey(req('GET', `/v2/x/blobs/${D}`, { host: 'a', accept: 'm' })));
    assert.notEqual(base, planKey(req('GET', `/v2/x/blobs/${D}`, { host: 'a', authorization: 'Bearer t', accept: 'n' })));
    assert.notEqual(base, planKey(req('GET', `/v2/x/blobs/${D}?ns=q`, { host: 'a', authorization: 'Bearer t', accept: 'm' })));
    assert.equal(base, planKey(req('HEAD', `/v2/x/blobs/${D}`, { host: 'a', authorization: 'Bearer t', accept: 'm' })), 'GET and HEAD share a plan');
  });
});

describe('Plans', () => {
  test('a plan expires at its time; forget drops every key of a digest and only those', () => {
    const plans = new Plans();
    plans.set('k1', plan(D));
    plans.set('k2', plan(D));
    plans.set('k3', plan(D2, 1000));
    assert.equal(plans.get('k3', 999)?.digest, D2);
    assert.equal(plans.get('k3', 1000), undefined, 'expired');
    assert.equal(plans.size, 2);
    plans.forget(D);
    assert.equal(plans.get('k1', 0), undefined);
    assert.equal(plans.get('k2', 0), undefined);
    plans.set('k4', plan(D2));
    plans.forget(D);
    assert.equal(plans.get('k4', 0)?.digest, D2);
  });

  test('bounded: the least recently used plan goes, and its digest index with it', () => {
    const plans = new Plans(2);
    plans.set('a', plan(D));
    plans.set('b', plan(D2));
    plans.get('a', 0);
    plans.set('c', plan(D2));
    assert.equal(plans.get('b', 0), undefined);
    assert.ok(plans.get('a', 0));
    plans.forget(D2);
    assert.equal(plans.get('c', 0), undefined);
    assert.equal(plans.size, 1);
  });
});

describe('the accel protocol', () => {
  test('an accel answer round-trips: object headers replayed, private and per-response ones not', () => {
    const headers = accelHeaders({ 'Content-Type': 'application/octet-stream', 'Content-Length': '123', 'Docker-Content-Digest': D, 'X-Cache': 'HIT' }, '/c/blobs/sha256/ab/x y', 123, 60_000);
    assert.equal(headers['Content-Length'], '0', 'the accel answer itself has no body');
    const lower = Object.fromEntries(Object.entries({ ...headers, 'X-Request-Id': 'r', Date: 'now' }).map(([k, v]) => [k.toLowerCase(), v]));
    const p = readAccel(200, lower, 1_000);
    assert.ok(p);
    assert.equal(p.file, '/c/blobs/sha256/ab/x y');
    assert.equal(p.size, 123);
    assert.equal(p.digest, D);
    assert.equal(p.expiresAt, 61_000);
    assert.deepEqual(p.headers, { 'content-type': 'application/octet-stream', 'docker-content-digest': D, 'x-cache': 'HIT' });
    const forever = readAccel(200, Object.fromEntries(Object.entries(accelHeaders({ 'Docker-Content-Digest': D }, '/f', 1, Infinity)).map(([k, v]) => [k.toLowerCase(), v])), 5);
    assert.equal(forever?.expiresAt, Infinity);
  });

  test('anything else is an ordinary answer: other status, missing or malformed private headers', () => {
    const good = Object.fromEntries(Object.entries(accelHeaders({ 'Docker-Content-Digest': D }, '/f', 1, 10)).map(([k, v]) => [k.toLowerCase(), v]));
    assert.equal(readAccel(206, good, 0), undefined);
    assert.equal(readAccel(200, {}, 0), undefined);
    assert.equal(readAccel(200, { ...good, 'docker-content-digest': undefined }, 0), undefined);
    assert.equal(readAccel(200, { ...good, 'x-gantry-accel-size': '-1' }, 0), undefined);
    assert.equal(readAccel(200, { ...good, 'x-gantry-accel-size': 'big' }, 0), undefined);
    assert.equal(readAccel(200, { ...good, 'x-gantry-accel-ttl-ms': 'soon' }, 0), undefined);
  });

  test('a forwarded request carries the client address; the main process trusts it only from its internal listener', () => {
    const incoming = req('GET', '/admin/verify', { host: 'h', connection: 'keep-alive', 'keep-alive': 'timeout=5', [FORWARDED_CLIENT]: '127.0.0.1' }, '192.0.2.9');
    const out = forwardedHeaders(incoming);
    assert.equal(out[FORWARDED_CLIENT], '192.0.2.9', "a client's own claim is replaced by its real address");
    assert.equal(out['connection'], undefined);
    assert.equal(out['keep-alive'], undefined);
    assert.equal(out['host'], 'h');

    const direct = req('GET', '/admin/verify', { [FORWARDED_CLIENT]: '127.0.0.1' }, '192.0.2.9');
    assert.equal(isForwarded(direct), false);
    assert.equal(clientAddress(direct), '192.0.2.9', 'a header on a direct request is not believed');
    const relayed = req('GET', '/admin/verify', { [FORWARDED_CLIENT]: '192.0.2.9' }, '');
    markForwarded(relayed);
    assert.equal(isForwarded(relayed), true);
    assert.equal(clientAddress(relayed), '192.0.2.9');
    assert.equal(relayed.headers[FORWARDED_CLIENT], undefined, 'the header is consumed');
  });
});

describe('servingProcessCount', () => {
  test('auto: one per core on 2 or more cores (at most 8), none on one; a number is taken as is', () => {
    assert.equal(servingProcessCount('auto', 1), 0);
    assert.equal(servingProcessCount('auto', 2), 2);
    assert.equal(servingProcessCount('auto', 8), 8);
    assert.equal(servingProcessCount('auto', 64), 8, 'auto stops at 8');
    assert.equal(servingProcessCount(0, 8), 0);
    assert.equal(servingProcessCount(3, 1), 3);
  });
});
