import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { RegistryError } from '../../../src/oci/errors.ts';
import { FillError } from '../../../src/proxy/fill.ts';
import { isTransient } from '../../../src/prefetch/jobs.ts';
import { isPrefetchJob, jobStateOf, newJob, parsePrefetchRequest, PrefetchInputError, type PrefetchImage } from '../../../src/prefetch/job.ts';

function image(state: PrefetchImage['state']): PrefetchImage {
  return { ref: 'docker.io/library/a:1', state, blobs: 0, blobsDone: 0, bytes: 0, bytesDone: 0 };
}

describe('parsePrefetchRequest', () => {
  test('normalises references and platforms, drops duplicates, keeps order; pin defaults to false', () => {
    assert.deepEqual(parsePrefetchRequest({ images: ['nginx', 'ghcr.io/org/app:1.2', 'docker.io/library/nginx:latest'], platforms: ['linux/arm64/v8', 'linux/amd64'] }), {
      images: ['docker.io/library/nginx:latest', 'ghcr.io/org/app:1.2'],
      platforms: ['linux/arm64/v8', 'linux/amd64'],
      pin: false,
    });
    assert.equal(parsePrefetchRequest({ images: ['a'], pin: true }).pin, true);
  });

  test('each bad field is refused with a message naming it', () => {
    const cases: Array<[unknown, RegExp]> = [
      [null, /JSON object/],
      [['a'], /JSON object/],
      [{}, /^images: expected a list of strings/],
      [{ images: 'nginx' }, /^images: expected a list/],
      [{ images: [1] }, /^images: expected a list of strings/],
      [{ images: [] }, /^images: name at least one image/],
      [{ images: Array.from({ length: 1001 }, (_, i) => `a${i}`) }, /^images: at most 1000 entries \(got 1001\)/],
      [{ images: ['UPPER/case'] }, /invalid image reference "UPPER\/case"/],
      [{ images: ['a'], platforms: ['linux'] }, /linux/],
      [{ images: ['a'], platforms: 'linux/amd64' }, /^platforms: expected a list/],
      [{ images: ['a'], pin: 1 }, /^pin: expected true or false/],
      [{ images: ['a'], platform: ['linux/amd64'] }, /^unknown field "platform"/],
    ];
    for (const [body, message] of cases) {
      assert.throws(() => parsePrefetchRequest(body), (err: unknown) => err instanceof PrefetchInputError && message.test(err.message), JSON.stringify(body)?.slice(0, 80));
    }
  });
});

describe('job state', () => {
  test('queued until an image starts; running while any is left; then done, or failed if any failed', () => {
    assert.equal(jobStateOf([image('queued'), image('queued')]), 'queued');
    assert.equal(jobStateOf([image('running'), image('queued')]), 'running');
    assert.equal(jobStateOf([image('failed'), image('queued')]), 'running');
    assert.equal(jobStateOf([image('done'), image('done')]), 'done');
    assert.equal(jobStateOf([image('done'), image('failed')]), 'failed');
  });

  test('a record read back is accepted only if every field has its type', () => {
    const job = newJob('abc', { images: ['docker.io/library/a:1'], platforms: [], pin: false }, new Date(0));
    assert.ok(isPrefetchJob(JSON.parse(JSON.stringify(job))));
    assert.ok(!isPrefetchJob({ ...job, state: 'paused' }));
    assert.ok(!isPrefetchJob({ ...job, images: [{ ...job.images[0], bytes: '1' }] }));
    assert.ok(!isPrefetchJob({ ...job, platforms: [1] }));
    assert.ok(!isPrefetchJob('abc'));
  });

  test('the node that runs a job is optional: records written before clusters named it are read', () => {
    const job = newJob('abc', { images: ['docker.io/library/a:1'], platforms: [], pin: false }, new Date(0));
    assert.ok(!('node' in job), 'a single node names none');
    assert.ok(isPrefetchJob({ ...job, node: 'gantry-a' }));
    assert.ok(!isPrefetchJob({ ...job, node: 1 }));
  });
});

describe('isTransient: which failures a prefetch rides out', () => {
  test('outages and cut transfers are retried; answers (unknown, denied, bad data) are not', () => {
    const wrapped = (cause: unknown): Error => new Error('blob sha256:…: …', { cause });
    assert.ok(isTransient(wrapped(new RegistryError('UNAVAILABLE', { status: 502 }))));
    assert.ok(isTransient(wrapped(new RegistryError('TOOMANYREQUESTS'))));
    assert.ok(isTransient(wrapped(new FillError('upstream_error', 'socket hang up'))));
    assert.ok(isTransient(wrapped(new FillError('timeout', 'body timeout'))));
    assert.ok(!isTransient(wrapped(new RegistryError('MANIFEST_UNKNOWN'))));
    assert.ok(!isTransient(wrapped(new RegistryError('DENIED'))));
    assert.ok(!isTransient(wrapped(new FillError('digest_mismatch', 'bytes hash to …'))));
    assert.ok(!isTransient(new Error('no manifest for linux/s390x in its index')));
  });
});
