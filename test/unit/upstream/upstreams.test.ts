import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Upstreams } from '../../../src/upstream/upstreams.ts';
import { mockUpstream, type MockedUpstream } from '../support.ts';

const opened: MockedUpstream[] = [];
function upstreams(configs: Array<Parameters<typeof mockUpstream>[0]>, defaultUpstream: string): Upstreams {
  const clients = configs.map((c) => {
    const m = mockUpstream(c);
    opened.push(m);
    return m.client;
  });
  return new Upstreams(clients, { defaultUpstream });
}

after(async () => {
  await Promise.all(opened.map((m) => m.close()));
});

describe('Upstreams.clientNameOf: the name a client uses for a cached repository', () => {
  const u = upstreams(
    [
      { host: 'docker.io' },
      { host: 'ghcr.io' },
      { host: 'registry.internal:5000', prefix: 'internal', deny: ['secret/**'] },
    ],
    'docker.io',
  );

  test("the default upstream's repositories as they are", () => {
    assert.equal(u.clientNameOf('docker.io', 'library/alpine'), 'library/alpine');
    assert.equal(u.clientNameOf('docker.io', 'team/app'), 'team/app');
  });

  test("another upstream's behind its prefix, or its host without one", () => {
    assert.equal(u.clientNameOf('ghcr.io', 'org/app'), 'ghcr.io/org/app');
    assert.equal(u.clientNameOf('registry.internal:5000', 'team/app'), 'internal/team/app');
  });

  test('every name offered resolves back to the same upstream and repository', () => {
    for (const [host, repo] of [['docker.io', 'library/alpine'], ['ghcr.io', 'org/app'], ['registry.internal:5000', 'team/app']] as const) {
      const name = u.clientNameOf(host, repo);
      assert.ok(name !== undefined);
      const target = u.resolve(name);
      assert.equal(target.upstream.host, host);
      assert.equal(target.remoteName, repo);
    }
  });

  test('no name for an upstream no longer configured, or a repository its rules now deny', () => {
    assert.equal(u.clientNameOf('quay.io', 'org/app'), undefined);
    assert.equal(u.clientNameOf('registry.internal:5000', 'secret/app'), undefined);
  });

  test("a default-upstream repository that starts with another upstream's prefix gets the prefixed form", () => {
    const v = upstreams([{ host: 'registry.corp' }, { host: 'registry.internal:5000', prefix: 'internal' }], 'registry.corp');
    assert.equal(v.clientNameOf('registry.corp', 'internal/tools'), 'registry.corp/internal/tools');
    assert.equal(v.clientNameOf('registry.corp', 'team/app'), 'team/app');
  });
});
