import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { orphansOf, parseJobRecord, type OpenJobEntry } from '../../../src/prefetch/shared-jobs.ts';
import { newJob } from '../../../src/prefetch/job.ts';

describe('orphansOf', () => {
  test('unfinished jobs of nodes without a heartbeat, in index order; never this node\'s, a live node\'s, or an expired record', () => {
    const entries: OpenJobEntry[] = [
      { id: 'dead-running', node: 'x', state: 'running' },
      { id: 'alive', node: 'b', state: 'running' },
      { id: 'mine', node: 'a', state: 'queued' },
      { id: 'expired', node: null, state: null },
      { id: 'finished', node: 'x', state: 'done' },
      { id: 'failed', node: 'y', state: 'failed' },
      { id: 'dead-queued', node: 'y', state: 'queued' },
    ];
    assert.deepEqual(orphansOf(entries, new Set(['b']), 'a'), [{ id: 'dead-running', node: 'x' }, { id: 'dead-queued', node: 'y' }]);
    assert.deepEqual(orphansOf(entries, new Set(['b', 'x', 'y']), 'a'), [], 'every node alive: nothing to adopt');
  });
});

describe('parseJobRecord', () => {
  const job = newJob('abc', { images: ['docker.io/library/a:1'], platforms: ['linux/amd64'], pin: true }, new Date(0));

  test('the job with the node its record names now (adoption rewrites that field, not the JSON)', () => {
    assert.deepEqual(parseJobRecord('b', JSON.stringify({ ...job, node: 'a' })), { ...job, node: 'b' });
    assert.deepEqual(parseJobRecord('a', JSON.stringify(job)), { ...job, node: 'a' }, 'a job recorded before nodes were named');
  });

  test('nothing for a missing or unreadable record', () => {
    assert.equal(parseJobRecord(null, JSON.stringify(job)), undefined);
    assert.equal(parseJobRecord('a', null), undefined);
    assert.equal(parseJobRecord('a', '{not json'), undefined);
    assert.equal(parseJobRecord('a', JSON.stringify({ ...job, state: 'paused' })), undefined);
    assert.equal(parseJobRecord('a', JSON.stringify({ ...job, node: 7 })), undefined);
  });
});
