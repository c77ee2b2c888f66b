// The e2e tier fails, rather than skips, where it cannot run: this file says so first, in one
// message, and every other e2e file fails in its before() with the same message.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { E2E_BINARIES, e2eHostProblem, requireE2eHost, REGISTRY } from './host.ts';
import { PODMAN, SKOPEO } from './engines.ts';

describe('the e2e host', () => {
  test('this host can run the e2e tier: root, the origin registry and every engine installed', () => {
    requireE2eHost();
  });

  test('not root: the check says so, and why', () => {
    const problem = e2eHostProblem(E2E_BINARIES, { uid: 1000, exists: () => true });
    assert.match(problem ?? '', /^the e2e tier cannot run on this host: not root \(uid 1000; the container engines mount/);
    assert.doesNotMatch(problem ?? '', /not installed/);
  });

  test('missing binaries: each named with its Debian package, the fix given once', () => {
    const absent = new Set([PODMAN, SKOPEO, REGISTRY]);
    const problem = e2eHostProblem([PODMAN, SKOPEO], { uid: 0, exists: (b) => !absent.has(b) });
    assert.equal(
      problem,
      'the e2e tier cannot run on this host: not installed: /usr/bin/docker-registry (docker-registry), /usr/bin/podman (podman), /usr/bin/skopeo (skopeo). ' +
        'Run it as root after `bash scripts/ensure-system-deps.sh` (npm test does that first).',
    );
  });

  test('both at once, in one message; nothing to say on a host that can run it', () => {
    const problem = e2eHostProblem([PODMAN], { uid: undefined, exists: () => false });
    assert.match(problem ?? '', /not root \(uid unknown;.*\); not installed: \/usr\/bin\/docker-registry \(docker-registry\), \/usr\/bin\/podman \(podman\)\./);
    assert.equal(e2eHostProblem([PODMAN], { uid: 0, exists: () => true }), undefined);
  });
});
