import { isFinished, type PrefetchJob } from './job.ts';

/**
 * Of two copies of one job, the one to show: the copy of the node that runs it. This node's own
 * copy is live (its running image's progress is read in memory), so it wins for the jobs this node
 * runs; the cluster's copy wins for a job another node runs, or adopted while this one was down.
 * Wall clocks are not compared: the nodes' clocks need not agree.
 */
export function fresherCopy(local: PrefetchJob, shared: PrefetchJob, node: string): PrefetchJob {
  return shared.node !== undefined && shared.node !== node ? shared : local;
}

/**
 * This node's jobs and the cluster's as one list: one entry per id (fresherCopy), newest first,
 * every unfinished job and the newest `keptFinished` finished ones. `local` comes newest first
 * already; jobs created in the same millisecond keep the order they came in.
 */
export function mergeJobLists(local: readonly PrefetchJob[], shared: readonly PrefetchJob[], node: string, keptFinished: number): PrefetchJob[] {
  const byId = new Map<string, PrefetchJob>();
  for (const job of local) byId.set(job.id, job);
  for (const job of shared) {
    const mine = byId.get(job.id);
    byId.set(job.id, mine ? fresherCopy(mine, job, node) : job);
  }
  const newestFirst = [...byId.values()].sort((a, b) => Date.parse(b.createdAt) - Date.parse(a.createdAt));
  let finished = 0;
  return newestFirst.filter((job) => !isFinished(job) || finished++ < keptFinished);
}
