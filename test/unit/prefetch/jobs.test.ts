// PrefetchJobs over a JobBoard (the cluster's jobs), with the board and the record store in
// memory. No image is fetched here: the jobs are either not run, handed over before their first
// image, or adopted with every image already done.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createMetrics, type Metrics } from '../../../src/observability/metrics.ts';
import type { ImageFetchDeps } from '../../../src/prefetch/image-fetch.ts';
import { newJob, type JobState, type PrefetchJob } from '../../../src/prefetch/job.ts';
import { PrefetchJobs, type JobBoard, type PublishResult } from '../../../src/prefetch/jobs.ts';
import type { RecordStore } from '../../../src/store/index-store.ts';
import { waitFor } from '../../helpers/wait-for.ts';
import { silent } from '../support.ts';

function job(id: string, createdAtMs: number, state: JobState, node?: string): PrefetchJob {
  return { ...newJob(id, { images: ['docker.io/library/a:1', 'docker.io/library/b:1'], platforms: [], pin: false }, new Date(createdAtMs)), state, ...(node === undefined ? {} : { node }) };
}

function memoryStore(initial: PrefetchJob[] = []): RecordStore & { records: Map<string, unknown> } {
  const records = new Map<string, unknown>(initial.map((j) => [j.id, structuredClone(j)]));
  return {
    records,
    put: async (key, value) => void records.set(key, structuredClone(value)),
    delete: async (key) => void records.delete(key),
    async *all() {
      yield* records.entries();
    },
  };
}

/** The cluster as one node sees it: jobs by id, who publishes what, and orphans to hand out. */
class MemoryBoard implements JobBoard {
  readonly node: string;
  readonly shared = new Map<string, PrefetchJob>();
  readonly published: PrefetchJob[] = [];
  orphans: PrefetchJob[] = [];
  started = false;

  constructor(node: string) {
    this.node = node;
  }

  async publish(j: PrefetchJob): Promise<PublishResult> {
    const owner = this.shared.get(j.id)?.node;
    if (owner !== undefined && owner !== this.node) return 'taken';
    this.published.push(structuredClone(j));
    this.shared.set(j.id, { ...structuredClone(j), node: this.node });
    return 'published';
  }

  async get(id: string): Promise<PrefetchJob | undefined> {
    return this.shared.get(id);
  }

  async list(limit: number): Promise<PrefetchJob[]> {
    return [...this.shared.values()].reverse().slice(0, limit);
  }

  async adoptOrphan(): Promise<PrefetchJob | undefined> {
    const found = this.orphans.shift();
    if (found) this.shared.set(found.id, { ...found, node: this.node });
    return found && { ...found, node: this.node };
  }

  start(): void {
    this.started = true;
  }

  async close(): Promise<void> {
    this.started = false;
  }
}

function jobsOn(store: RecordStore, board: JobBoard): { jobs: PrefetchJobs; resolved: string[]; metrics: Metrics } {
  const resolved: string[] = [];
  const metrics = createMetrics();
  const jobs = new PrefetchJobs({
    // Never reached: no image is fetched in these tests (resolve records it if one were).
    ...({} as ImageFetchDeps),
    store,
    resolve: (ref) => {
      resolved.push(ref.repository);
      throw new Error('no upstream in this test');
    },
    metrics,
    log: silent,
    board,
    adoptEveryMs: 10,
  });
  return { jobs, resolved, metrics };
}

describe('PrefetchJobs in a cluster', () => {
  test('at start-up, a job another node adopted meanwhile is not resumed: its copy replaces ours; our own jobs resume, named after this node', async () => {
    const store = memoryStore([job('adopted', 1_000, 'running', 'a'), job('ours', 2_000, 'queued'), job('unknown', 3_000, 'queued', 'a')]);
    const board = new MemoryBoard('a');
    board.shared.set('adopted', job('adopted', 1_000, 'done', 'b'));
    board.shared.set('ours', job('ours', 2_000, 'queued', 'a'));
    const { jobs, metrics } = jobsOn(store, board);
    await jobs.load();
    assert.equal((await metrics.prefetchQueuedJobs.get()).values[0]?.value, 2, 'two jobs resume here');
    assert.deepEqual(store.records.get('adopted'), board.shared.get('adopted'), 'the adopter\'s copy is kept');
    assert.equal((await jobs.get('adopted'))?.node, 'b');
    assert.equal((await jobs.get('ours'))?.node, 'a');
    await jobs.close();
  });

  test('a job this node does not have is read from the cluster; the listing merges both, newest first', async () => {
    const board = new MemoryBoard('a');
    board.shared.set('theirs', job('theirs', 5_000, 'running', 'b'));
    const { jobs } = jobsOn(memoryStore([job('mine', 1_000, 'done', 'a')]), board);
    await jobs.load();
    assert.equal((await jobs.get('theirs'))?.node, 'b');
    assert.equal(await jobs.get('nowhere'), undefined);
    assert.deepEqual((await jobs.list()).map((j) => [j.id, j.node]), [['theirs', 'b'], ['mine', 'a']]);
    await jobs.close();
  });

  test('a job another node took over while this one was cut off is handed over at its next save, not run', async () => {
    const store = memoryStore([job('j', 1_000, 'queued', 'a')]);
    const board = new MemoryBoard('a');
    const { jobs, resolved } = jobsOn(store, board);
    await jobs.load();
    board.shared.set('j', job('j', 1_000, 'running', 'b'));
    jobs.start();
    await waitFor('the job to be handed over', () => (store.records.get('j') as PrefetchJob).node === 'b', { timeoutMs: 5_000 });
    await jobs.close();
    assert.deepEqual(resolved, [], 'no image of it was fetched here');
    assert.equal((await jobs.get('j'))?.node, 'b');
  });

  test('an idle node adopts an orphan: images done stay done, it finishes as this node\'s, and shows it to the cluster', async () => {
    const store = memoryStore();
    const board = new MemoryBoard('a');
    const orphan = job('orphan', 1_000, 'running', 'gone');
    orphan.images = orphan.images.map((i) => ({ ...i, state: 'done' }));
    board.orphans.push(orphan);
    const { jobs, resolved } = jobsOn(store, board);
    await jobs.load();
    jobs.start();
    assert.ok(board.started, 'the node says it is alive once it serves');
    const done = await waitFor('the adopted job to finish', () => {
      const saved = store.records.get('orphan') as PrefetchJob | undefined;
      return saved?.state === 'done' && saved;
    }, { timeoutMs: 5_000 });
    await jobs.close();
    assert.equal(done.node, 'a');
    assert.deepEqual(resolved, [], 'nothing fetched again');
    assert.equal(board.shared.get('orphan')?.state, 'done');
    assert.ok(!board.started, 'closed with the jobs');
  });

  test('an image cut off on the node that is gone runs again on the adopter', async () => {
    const store = memoryStore();
    const board = new MemoryBoard('a');
    const orphan = job('cut', 1_000, 'running', 'gone');
    orphan.images = [{ ...orphan.images[0]!, state: 'done' }, { ...orphan.images[1]!, state: 'running', bytesDone: 5, bytes: 10 }];
    board.orphans.push(orphan);
    const { jobs, resolved } = jobsOn(store, board);
    await jobs.load();
    jobs.start();
    const ended = await waitFor('the adopted job to end', () => {
      const saved = store.records.get('cut') as PrefetchJob | undefined;
      return saved?.finishedAt !== undefined && saved;
    }, { timeoutMs: 5_000 });
    await jobs.close();
    assert.deepEqual(resolved, ['library/b'], 'only the image cut off ran again');
    assert.deepEqual(ended.images.map((i) => i.state), ['done', 'failed'], 'failed here only because this test has no upstream');
  });
});
