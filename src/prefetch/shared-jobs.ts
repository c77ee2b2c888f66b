import type { Redis } from 'ioredis';
import type { Logger } from '../observability/logger.ts';
import { isFinished, isPrefetchJob, type PrefetchJob } from './job.ts';
import type { JobBoard, PublishResult } from './jobs.ts';
import type { Coordinator } from '../cluster/coordinator.ts';
import { aliveNodes, HEARTBEAT_TTL_MS, heartbeatKey, NodeHeartbeat } from '../cluster/heartbeat.ts';

/** An unfinished job's record outlives a day without a save only if its node is gone for good. */
const UNFINISHED_TTL_MS = 24 * 60 * 60 * 1000;
/** A finished job stays visible to every node for a week, as `GET /admin/prefetch` shows it. */
const FINISHED_TTL_MS = 7 * 24 * 60 * 60 * 1000;
/** Index entries read by one listing or one orphan scan: bounded work however many jobs are kept. */
const SCAN_LIMIT = 100;

/** All jobs by creation time (for listings), and the unfinished ones (for orphan scans). */
const ALL = 'gantry:jobs';
const OPEN = 'gantry:jobs:open';

function recordKey(id: string): string {
  return `gantry:job:${id}`;
}

/**
 * Write a job's record unless another node has adopted it (its record names that node): then
 * answer that node and write nothing. Renews the writer's heartbeat in the same step, so a job
 * published after Redis lost its data is never taken from a node that is alive.
 * KEYS: record, ALL, OPEN, heartbeat. ARGV: node, state, job JSON, ttl, createdAt ms, id, finished, heartbeat ttl and value.
 */
const PUBLISH = `local owner = redis.call('hget', KEYS[1], 'node')
if owner and owner ~= ARGV[1] then return owner end
redis.call('hset', KEYS[1], 'node', ARGV[1], 'state', ARGV[2], 'job', ARGV[3])
redis.call('pexpire', KEYS[1], ARGV[4])
redis.call('zadd', KEYS[2], ARGV[5], ARGV[6])
if ARGV[7] == '1' then redis.call('zrem', KEYS[3], ARGV[6]) else redis.call('zadd', KEYS[3], ARGV[5], ARGV[6]) end
redis.call('set', KEYS[4], ARGV[9], 'PX', ARGV[8])
return ARGV[1]`;

/**
 * Adopt an unfinished job if its node is still the one seen and still has no heartbeat: checked and
 * written in one step, so of the nodes that find the same orphan exactly one adopts it (a lock
 * taken with SET NX would need its own expiry and release for the same guarantee).
 * KEYS: record, the old node's heartbeat. ARGV: old node, new node, ttl. Answers the job's JSON, or nil.
 */
const ADOPT = `if redis.call('hget', KEYS[1], 'node') ~= ARGV[1] then return false end
if redis.call('exists', KEYS[2]) == 1 then return false end
local state = redis.call('hget', KEYS[1], 'state')
if state ~= 'queued' and state ~= 'running' then return false end
redis.call('hset', KEYS[1], 'node', ARGV[2])
redis.call('pexpire', KEYS[1], ARGV[3])
return redis.call('hget', KEYS[1], 'job')`;

/**
 * Prefetch jobs in Redis for every node (see JobBoard): `gantry:job:<id>` (hash: node, state, the
 * job's JSON; 1 day while unfinished, renewed by each save, 7 days once finished), `gantry:jobs`
 * and `gantry:jobs:open` (sorted sets of ids by creation time; entries whose record expired are
 * dropped as scans meet them), and each node's heartbeat (cluster/heartbeat.ts). Every call falls
 * back at once while Redis is down (Coordinator.command): the node keeps its jobs to itself.
 */
export class SharedJobs implements JobBoard {
  readonly node: string;
  private readonly coordinator: Coordinator;
  private readonly heartbeat: NodeHeartbeat;
  private readonly log: Logger;

  constructor(coordinator: Coordinator, node: string, log: Logger) {
    this.coordinator = coordinator;
    this.node = node;
    this.heartbeat = new NodeHeartbeat(coordinator, node);
    this.log = log.child({ component: 'shared-jobs' });
  }

  start(): void {
    this.heartbeat.start();
  }

  async close(): Promise<void> {
    this.heartbeat.stop();
  }

  publish(job: PrefetchJob): Promise<PublishResult> {
    const finished = isFinished(job);
    return this.coordinator.command<PublishResult>('offline', async (r) => {
      const owner = await r.eval(
        PUBLISH, 4, recordKey(job.id), ALL, OPEN, heartbeatKey(this.node),
        this.node, job.state, JSON.stringify({ ...job, node: this.node }), String(finished ? FINISHED_TTL_MS : UNFINISHED_TTL_MS),
        String(Date.parse(job.createdAt) || 0), job.id, finished ? '1' : '0', String(HEARTBEAT_TTL_MS), new Date().toISOString(),
      );
      return owner === this.node ? 'published' : 'taken';
    });
  }

  get(id: string): Promise<PrefetchJob | undefined> {
    return this.coordinator.command(undefined, async (r) => {
      const [node, json] = await r.hmget(recordKey(id), 'node', 'job');
      return parseJobRecord(node, json);
    });
  }

  list(limit: number): Promise<PrefetchJob[]> {
    return this.coordinator.command([], async (r) => {
      const ids = await r.zrevrange(ALL, 0, limit - 1);
      const records = await fieldsOf(r, ids, ['node', 'job']);
      await dropFrom(r, ALL, ids.filter((_, i) => records[i]?.[0] == null));
      return records.flatMap(([node, json]) => parseJobRecord(node, json) ?? []);
    });
  }

  adoptOrphan(): Promise<PrefetchJob | undefined> {
    return this.coordinator.command(undefined, async (r) => {
      await this.pruneListing(r);
      const ids = await r.zrange(OPEN, 0, SCAN_LIMIT - 1);
      const entries = (await fieldsOf(r, ids, ['node', 'state'])).map(([node, state], i) => ({ id: ids[i] ?? '', node: node ?? null, state: state ?? null }));
      await dropFrom(r, OPEN, entries.filter((e) => e.node === null || !isUnfinished(e.state)).map((e) => e.id));
      const owners = [...new Set(entries.flatMap((e) => (e.node !== null && e.node !== this.node ? [e.node] : [])))];
      for (const orphan of orphansOf(entries, await aliveNodes(r, owners), this.node)) {
        const json = await r.eval(ADOPT, 2, recordKey(orphan.id), heartbeatKey(orphan.node), orphan.node, this.node, String(UNFINISHED_TTL_MS));
        if (typeof json !== 'string') continue; // another node was first, or the old one came back
        const job = parseJobRecord(this.node, json);
        if (job) {
          this.log.warn({ job: orphan.id, from: orphan.node }, 'adopted the prefetch job of a node that is gone');
          return job;
        }
        // Ours now but unreadable (another version wrote it): nobody could run it.
        await r.del(recordKey(orphan.id));
        await dropFrom(r, OPEN, [orphan.id]);
      }
      return undefined;
    });
  }

  /** Drop the oldest listing entries whose record expired, so the index does not outgrow the records. */
  private async pruneListing(r: Redis): Promise<void> {
    const ids = await r.zrange(ALL, 0, SCAN_LIMIT - 1);
    const records = await fieldsOf(r, ids, ['node']);
    await dropFrom(r, ALL, ids.filter((_, i) => records[i]?.[0] == null));
  }
}

/** An entry of the unfinished-jobs index with its record's node and state (null: the record expired). */
export type OpenJobEntry = { id: string; node: string | null; state: string | null };

/** The unfinished jobs, in index order, whose node is not `self` and has no heartbeat: theirs to adopt. */
export function orphansOf(entries: readonly OpenJobEntry[], alive: ReadonlySet<string>, self: string): Array<{ id: string; node: string }> {
  return entries.flatMap(({ id, node, state }) => (node !== null && node !== self && !alive.has(node) && isUnfinished(state) ? [{ id, node }] : []));
}

/**
 * A job read back from Redis, with the node its record names (the record's `node` field is the
 * one adoption rewrites); undefined when absent or unreadable (written by another version).
 */
export function parseJobRecord(node: string | null | undefined, json: string | null | undefined): PrefetchJob | undefined {
  if (node == null || json == null) return undefined;
  let value: unknown;
  try {
    value = JSON.parse(json);
  } catch {
    return undefined;
  }
  return isPrefetchJob(value) ? { ...value, node } : undefined;
}

function isUnfinished(state: string | null): boolean {
  return state === 'queued' || state === 'running';
}

/** Per id, the values of `fields` in its record (null where absent), in one round trip. */
async function fieldsOf(r: Redis, ids: readonly string[], fields: readonly string[]): Promise<Array<Array<string | null>>> {
  if (ids.length === 0) return [];
  const pipeline = r.pipeline();
  for (const id of ids) pipeline.hmget(recordKey(id), ...fields);
  const replies = (await pipeline.exec()) ?? [];
  return ids.map((_, i) => {
    const [err, values] = replies[i] ?? [new Error('redis: a reply is missing'), undefined];
    if (err) throw err;
    return Array.isArray(values) ? values.map((v) => (typeof v === 'string' ? v : null)) : fields.map(() => null);
  });
}

async function dropFrom(r: Redis, index: string, ids: readonly string[]): Promise<void> {
  if (ids.length > 0) await r.zrem(index, ...ids);
}
