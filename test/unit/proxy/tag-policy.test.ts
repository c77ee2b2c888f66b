// Which tags are trusted for ever (immutableTags) and how long the others are (tagTtlSeconds).
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { tagMatcher, tagTtlPolicy } from '../../../src/proxy/tag-policy.ts';

describe('tagMatcher', () => {
  test('`*` stands for any characters; the rest is literal', () => {
    const m = tagMatcher(['v*.*.*', 'sha256-*.sig']);
    for (const t of ['v1.2.3', 'v10.0.0-rc1', `sha256-${'a'.repeat(64)}.sig`]) assert.ok(m(t), t);
    for (const t of ['v1.2', 'latest', 'xv1.2.3', `sha256-${'a'.repeat(64)}.att`, 'v1a2b3']) assert.ok(!m(t), t);
  });

  test('no patterns: nothing is immutable', () => {
    assert.equal(tagMatcher([])('anything'), false);
  });
});

describe('tagTtlPolicy', () => {
  const policy = tagTtlPolicy({
    tagTtlSeconds: 300,
    immutableTags: ['v*.*.*'],
    upstreams: [{ host: 'docker.io', url: 'https://registry-1.docker.io' }, { host: 'ghcr.io', url: 'https://ghcr.io', tagTtlSeconds: 60, immutableTags: ['*.sig'] }],
  });

  test('global patterns apply to every upstream, an upstream\'s own only to it', () => {
    assert.equal(policy('docker.io', 'v1.2.3'), Infinity);
    assert.equal(policy('docker.io', 'abc.sig'), 300_000);
    assert.equal(policy('ghcr.io', 'abc.sig'), Infinity);
    assert.equal(policy('ghcr.io', 'v1.2.3'), Infinity);
  });

  test('other tags keep their upstream\'s TTL, or the global one', () => {
    assert.equal(policy('ghcr.io', 'latest'), 60_000);
    assert.equal(policy('docker.io', 'latest'), 300_000);
    assert.equal(policy('unknown.example', 'latest'), 300_000);
  });
});
