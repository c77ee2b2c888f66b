import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseImageRef } from '../../../src/oci/image-ref.ts';
import { locateImage } from '../../../src/transfer/image-location.ts';

const hub = { upstreams: [{ host: 'docker.io' }, { host: 'ghcr.io' }], defaultUpstream: 'docker.io' };
const mirrorDefault = { upstreams: [{ host: 'mirror.internal' }, { host: 'ghcr.io' }], defaultUpstream: 'mirror.internal' };

test('a registry host that is a configured upstream is that upstream', () => {
  assert.deepEqual(locateImage(parseImageRef('ghcr.io/org/app:1'), hub), { upstream: 'ghcr.io', repositories: ['org/app'] });
  assert.deepEqual(locateImage(parseImageRef('mirror.internal/team/x'), mirrorDefault), { upstream: 'mirror.internal', repositories: ['team/x'] });
});

test('Docker Hub names go to the default upstream; under another default, official images may be cached without library/', () => {
  assert.deepEqual(locateImage(parseImageRef('nginx'), hub), { upstream: 'docker.io', repositories: ['library/nginx'] });
  assert.deepEqual(locateImage(parseImageRef('nginx'), mirrorDefault), { upstream: 'mirror.internal', repositories: ['library/nginx', 'nginx'] });
  assert.deepEqual(locateImage(parseImageRef('team/app'), mirrorDefault), { upstream: 'mirror.internal', repositories: ['team/app'] });
});

test('a registry no upstream serves has no location', () => {
  assert.equal(locateImage(parseImageRef('quay.io/org/app'), hub), undefined);
});
