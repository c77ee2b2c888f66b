import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { fresherCopy, mergeJobLists } from '../../../src/prefetch/job-merge.ts';
import { newJob, type JobState, type PrefetchJob } from '../../../src/prefetch/job.ts';

function job(id: string, createdAtMs: number, state: JobState, node?: string): PrefetchJob {
  return { ...newJob(id, { images: ['docker.io/library/a:1'], platforms: [], pin: false }, new Date(createdAtMs)), state, ...(node === undefined ? {} : { node }) };
}

describe('fresherCopy', () => {
  test('this node\'s copy of a job it runs wins over the cluster\'s, which lags behind its live progress', () => {
    const local = job('j', 0, 'running', 'a');
    assert.equal(fresherCopy(local, job('j', 0, 'queued', 'a'), 'a'), local);
    assert.equal(fresherCopy(local, job('j', 0, 'queued'), 'a'), local, 'a record without a node says nothing else');
  });

  test('the cluster\'s copy wins for a job another node runs, or adopted from this one', () => {
    const shared = job('j', 0, 'done', 'b');
    assert.equal(fresherCopy(job('j', 0, 'running', 'a'), shared, 'a'), shared);
    assert.equal(fresherCopy(job('j', 0, 'running', 'b'), shared, 'a'), shared);
  });
});

describe('mergeJobLists', () => {
  test('one entry per job, newest first, whichever side it came from', () => {
    const local = [job('l2', 2_000, 'running', 'a'), job('both', 1_000, 'running', 'a')];
    const shared = [job('s3', 3_000, 'queued', 'b'), job('both', 1_000, 'queued', 'a'), job('s0', 0, 'done', 'c')];
    const merged = mergeJobLists(local, shared, 'a', 100);
    assert.deepEqual(merged.map((j) => [j.id, j.node, j.state]), [['s3', 'b', 'queued'], ['l2', 'a', 'running'], ['both', 'a', 'running'], ['s0', 'c', 'done']]);
  });

  test('every unfinished job is kept, and only the newest finished ones', () => {
    const shared = [job('f3', 3_000, 'done', 'b'), job('f2', 2_000, 'failed', 'b'), job('old-open', 500, 'queued', 'b'), job('f1', 1_000, 'done', 'c')];
    assert.deepEqual(mergeJobLists([job('l4', 4_000, 'done', 'a')], shared, 'a', 2).map((j) => j.id), ['l4', 'f3', 'old-open']);
  });

  test('jobs created in the same millisecond keep the order they came in', () => {
    const local = [job('x', 1_000, 'done', 'a'), job('y', 1_000, 'done', 'a')];
    assert.deepEqual(mergeJobLists(local, [job('z', 1_000, 'done', 'b')], 'a', 100).map((j) => j.id), ['x', 'y', 'z']);
  });
});
