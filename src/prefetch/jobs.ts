import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { RegistryError } from '../oci/errors.ts';
import { FillError } from '../proxy/fill.ts';
import { parseImageRef, type ImageRef } from '../oci/image-ref.ts';
import { parsePlatform } from '../oci/manifest.ts';
import type { Logger } from '../observability/logger.ts';
import type { Metrics } from '../observability/metrics.ts';
import type { RecordStore } from '../store/index-store.ts';
import type { ResolvedTarget } from '../upstream/upstreams.ts';
import { ImageFetch, type ImageFetchDeps } from './image-fetch.ts';
import { mergeJobLists } from './job-merge.ts';
import { isFinished, isPrefetchJob, jobStateOf, newJob, PrefetchInputError, type PrefetchImage, type PrefetchJob, type PrefetchRequest } from './job.ts';

/**
 * Before giving an image up on an upstream outage (down, 5xx, 429, cut transfers): about two
 * minutes of waits, the breaker probing meanwhile, so a link that drops for a moment does not
 * fail a night's prefetch, and one that stays down does not hold the queue for long.
 */
const RETRY_DELAYS_MS = [1_000, 2_000, 4_000, 8_000, 16_000, 30_000, 60_000];

/** Finished jobs kept for `GET /admin/prefetch`; older ones are deleted. */
const KEPT_FINISHED_JOBS = 100;
/** The cluster's newest jobs read for a listing: the kept ones of this node and of a few others. */
const LISTED_FROM_CLUSTER = 2 * KEPT_FINISHED_JOBS;
/** A running image's progress is shown to the other nodes this often. */
const PROGRESS_EVERY_MS = 2_000;
/** An idle node looks for jobs left by a node that is gone this often (a bounded scan each time). */
const ADOPT_EVERY_MS = 5_000;

/** What a job's publication to the other nodes came to: shown, taken over by another node (it runs there now), or not shown (no Redis now). */
export type PublishResult = 'published' | 'taken' | 'offline';

/**
 * Where the jobs of the nodes of a cluster meet (prefetch/shared-jobs.ts). Best effort by
 * contract: while it cannot be reached every call answers at once with nothing ('offline',
 * undefined, []) and never throws, and this node keeps its jobs to itself as a single node does.
 */
export type JobBoard = {
  /** This node's name, recorded in the jobs it runs. */
  readonly node: string;
  /** Show a job this node runs to the others; 'taken' when another node adopted it meanwhile. */
  publish(job: PrefetchJob): Promise<PublishResult>;
  /** A job as the cluster last saw it, with the node that runs it. */
  get(id: string): Promise<PrefetchJob | undefined>;
  /** The cluster's newest jobs, at most `limit`, newest first. */
  list(limit: number): Promise<PrefetchJob[]>;
  /** Take over one unfinished job whose node is gone; of the nodes that try, exactly one gets it. */
  adoptOrphan(): Promise<PrefetchJob | undefined>;
  /** Say this node is alive (it serves, so it runs its jobs), until close(). */
  start(): void;
  close(): Promise<void>;
};

export type PrefetchJobsOptions = ImageFetchDeps & {
  /** Where jobs persist (a record space of the cache index): they survive restarts and resume. */
  store: RecordStore;
  /** The upstream and repository an image reference names (Upstreams.forImage); throws a RegistryError if none. */
  resolve: (ref: ImageRef) => ResolvedTarget;
  metrics: Metrics;
  log: Logger;
  now?: () => Date;
  /** Waits before each retry of an image that failed on an outage (tests shorten them). */
  retryDelaysMs?: readonly number[];
  /** The cluster's jobs (Redis), when this node is one of several; absent: the jobs are this node's alone. */
  board?: JobBoard | undefined;
  /** How often an idle node looks for jobs to adopt (tests shorten it). */
  adoptEveryMs?: number;
};

/**
 * Prefetch jobs: accepted at once (202), run one at a time in the background, persisted in the
 * cache index as they progress, and resumed at start-up from the first image not done (its blobs
 * already cached cost nothing). Images of a job run in order; blobs of an image a few at a time.
 * In a cluster (a JobBoard), every node sees every job, and an idle node adopts the unfinished
 * jobs of a node that is gone.
 */
export class PrefetchJobs {
  private readonly jobs = new Map<string, PrefetchJob>();
  private readonly queue: string[] = [];
  /** Progress of the image running now, read when a job is asked for. */
  private running: { image: PrefetchImage; fetch: ImageFetch } | undefined;
  private loop: Promise<void> | undefined;
  private adopting: Promise<void> | undefined;
  private adoptTimer: NodeJS.Timeout | undefined;
  /** A progress publication in flight: the next waits for it rather than pile up behind a slow Redis. */
  private publishingProgress = false;
  private readonly stop = new AbortController();
  private started = false;
  private readonly opts: PrefetchJobsOptions;
  private readonly now: () => Date;
  private readonly retryDelaysMs: readonly number[];
  private readonly board: JobBoard | undefined;

  constructor(opts: PrefetchJobsOptions) {
    this.opts = opts;
    this.board = opts.board;
    this.now = opts.now ?? (() => new Date());
    this.retryDelaysMs = opts.retryDelaysMs ?? RETRY_DELAYS_MS;
  }

  /** Load persisted jobs; unfinished ones are queued again (an image cut off mid-way starts over, cheaply). */
  async load(): Promise<void> {
    const loaded: PrefetchJob[] = [];
    for await (const [key, value] of this.opts.store.all()) {
      if (isPrefetchJob(value)) loaded.push(value);
      else this.opts.log.warn({ key }, 'skipping an unreadable prefetch job record');
    }
    loaded.sort((a, b) => a.createdAt.localeCompare(b.createdAt));
    for (const job of loaded) {
      this.jobs.set(job.id, job);
      if (isFinished(job) || !(await this.resumesHere(job))) continue;
      for (const image of job.images) if (image.state === 'running') image.state = 'queued';
      this.queue.push(job.id);
    }
    if (this.queue.length > 0) this.opts.log.info({ jobs: this.queue.length }, 'resuming prefetch jobs');
    this.updateGauge();
  }

  /** Start running queued jobs (serving has begun), and in a cluster look for jobs to adopt. */
  start(): void {
    this.started = true;
    if (this.board && !this.adoptTimer) {
      this.board.start();
      this.adoptTimer = setInterval(() => this.adoptIfIdle(), this.opts.adoptEveryMs ?? ADOPT_EVERY_MS);
      this.adoptTimer.unref();
    }
    this.kick();
  }

  /** Validate, persist and queue a job; throws PrefetchInputError for bad input (nothing is queued then). */
  async submit(req: PrefetchRequest): Promise<PrefetchJob> {
    for (const ref of req.images) {
      try {
        this.opts.resolve(parseImageRef(ref));
      } catch (err) {
        throw new PrefetchInputError(`${ref}: ${(err as Error).message}`);
      }
    }
    const job = newJob(randomBytes(8).toString('hex'), req, this.now());
    if (this.board) job.node = this.board.node;
    await this.save(job);
    this.jobs.set(job.id, job);
    this.queue.push(job.id);
    this.opts.log.info({ job: job.id, images: job.images.length, platforms: job.platforms, pin: job.pin }, 'prefetch job queued');
    this.updateGauge();
    this.kick();
    return this.view(job);
  }

  /**
   * The job with live progress of its running image; undefined if unknown. In a cluster, a job
   * this node does not run is read from the cluster (with the progress its node last showed).
   */
  async get(id: string): Promise<PrefetchJob | undefined> {
    const job = this.jobs.get(id);
    if (job && this.runsHere(job)) return this.view(job);
    const shared = await this.board?.get(id);
    return shared ?? (job && this.view(job));
  }

  /** Every kept job, newest first; in a cluster, the other nodes' too (one entry per job, from the node that runs it). */
  async list(): Promise<PrefetchJob[]> {
    const local = [...this.jobs.values()].reverse().map((j) => this.view(j));
    if (!this.board) return local;
    return mergeJobLists(local, await this.board.list(LISTED_FROM_CLUSTER), this.board.node, KEPT_FINISHED_JOBS);
  }

  /** Stop after the current step; unfinished jobs stay queued in the index and resume at the next start. */
  async close(): Promise<void> {
    clearInterval(this.adoptTimer);
    this.stop.abort();
    await this.loop;
    await this.adopting;
    await this.board?.close();
  }

  private kick(): void {
    if (!this.started || this.loop || this.stop.signal.aborted) return;
    this.loop = this.drain().then(
      () => true,
      (err: unknown) => {
        // The index failed under us (disk trouble): jobs stay as last saved and resume at the next start.
        this.opts.log.error({ err: (err as Error).message }, 'prefetch jobs stopped: could not record their progress');
        return false;
      },
    ).then((ok) => {
      this.loop = undefined;
      // A job submitted as the loop finished.
      if (ok && this.queue.length > 0) this.kick();
    });
  }

  private async drain(): Promise<void> {
    for (let id = this.queue[0]; id !== undefined && !this.stop.signal.aborted; id = this.queue[0]) {
      const job = this.jobs.get(id);
      if (job) await this.runJob(job);
      if (this.stop.signal.aborted) return;
      this.queue.shift();
      this.updateGauge();
      await this.prune();
    }
  }

  private async runJob(job: PrefetchJob): Promise<void> {
    for (const image of job.images) {
      if (image.state !== 'queued') continue;
      const ours = await this.runImage(job, image);
      if (this.stop.signal.aborted) return;
      if (!ours) return this.handOver(job);
    }
    job.finishedAt = this.now().toISOString();
    job.state = jobStateOf(job.images);
    if (!(await this.save(job))) return this.handOver(job);
    const failed = job.images.filter((i) => i.state === 'failed').length;
    this.opts.log[failed > 0 ? 'warn' : 'info']({ job: job.id, images: job.images.length, failed }, 'prefetch job finished');
  }

  /** Fetch one image; false when another node turned out to run the job (it adopted it while this one was cut off). */
  private async runImage(job: PrefetchJob, image: PrefetchImage): Promise<boolean> {
    image.state = 'running';
    job.state = 'running';
    if (!(await this.save(job))) return false;
    let fetch: ImageFetch | undefined;
    const progress = this.board ? setInterval(() => void this.publishProgress(job), PROGRESS_EVERY_MS) : undefined;
    try {
      const ref = parseImageRef(image.ref);
      const target = this.opts.resolve(ref);
      const options = { platforms: job.platforms.map(parsePlatform), pin: job.pin };
      for (let attempt = 0; ; attempt++) {
        fetch = new ImageFetch(target, ref, options, this.opts);
        this.running = { image, fetch };
        try {
          await fetch.run(this.stop.signal);
          break;
        } catch (err) {
          // An upstream down or busy for a while is ridden out (what is cached stays cached); anything else fails now.
          const delay = this.retryDelaysMs[attempt];
          if (this.stop.signal.aborted || delay === undefined || !isTransient(err)) throw err;
          image.error = `${(err as Error).message} (attempt ${attempt + 1}; retrying in ${delay / 1000} s)`;
          this.opts.log.warn({ job: job.id, ref: image.ref, err: (err as Error).message, retryInMs: delay }, 'prefetch of an image will be retried');
          await sleep(delay, undefined, { signal: this.stop.signal });
        }
      }
      image.state = 'done';
      delete image.error;
    } catch (err) {
      // Shutting down is not a failure: the image stays queued and runs again at the next start.
      if (this.stop.signal.aborted) {
        image.state = 'queued';
      } else {
        image.state = 'failed';
        image.error = (err as Error).message;
        this.opts.log.warn({ job: job.id, ref: image.ref, err: image.error }, 'prefetch of an image failed');
      }
    } finally {
      clearInterval(progress);
      this.running = undefined;
    }
    if (fetch) Object.assign(image, progressOf(fetch));
    this.opts.metrics.prefetchImages.inc({ outcome: image.state === 'queued' ? 'interrupted' : image.state });
    return this.save(job);
  }

  private view(job: PrefetchJob): PrefetchJob {
    const copy: PrefetchJob = { ...job, images: job.images.map((i) => ({ ...i })) };
    const live = this.running;
    if (live) {
      const i = job.images.indexOf(live.image);
      if (i !== -1) copy.images[i] = { ...live.image, ...progressOf(live.fetch) };
    }
    return copy;
  }

  /** Persist the job, and show it to the cluster; false when another node has taken it over (it runs there). */
  private async save(job: PrefetchJob): Promise<boolean> {
    await this.opts.store.put(job.id, job);
    return !this.board || (await this.board.publish(this.view(job))) !== 'taken';
  }

  /** The running image's progress for the other nodes. A 'taken' answer is left to the save that ends the image. */
  private async publishProgress(job: PrefetchJob): Promise<void> {
    if (!this.board || this.publishingProgress) return;
    this.publishingProgress = true;
    try {
      await this.board.publish(this.view(job));
    } finally {
      this.publishingProgress = false;
    }
  }

  /** Whether this node runs the job (its own copy is the live one). */
  private runsHere(job: PrefetchJob): boolean {
    return !this.board || job.node === undefined || job.node === this.board.node;
  }

  /**
   * An unfinished job read back at start-up runs here unless another node runs it: one that
   * adopted it while this node was down. Then this node keeps that node's copy and leaves the job
   * alone. Without Redis now, the job runs here as on a single node.
   */
  private async resumesHere(job: PrefetchJob): Promise<boolean> {
    if (!this.board) return true;
    const shared = await this.board.get(job.id);
    const runner = shared?.node ?? job.node ?? this.board.node;
    if (runner === this.board.node) {
      job.node = runner;
      return true;
    }
    if (shared) {
      this.jobs.set(job.id, shared);
      await this.opts.store.put(job.id, shared);
    }
    this.opts.log.info({ job: job.id, node: runner }, 'prefetch job runs on another node (it adopted it while this one was down); not resumed here');
    return false;
  }

  /**
   * Another node adopted this job while this one could not renew its heartbeat (cut off from
   * Redis, not dead): it runs there. Stop here and keep its copy, so the job is not run twice over.
   */
  private async handOver(job: PrefetchJob): Promise<void> {
    const shared = await this.board?.get(job.id);
    if (shared) {
      this.jobs.set(job.id, shared);
      await this.opts.store.put(job.id, shared);
    }
    this.opts.log.warn({ job: job.id, node: shared?.node }, 'prefetch job taken over by another node; it goes on there');
  }

  /** While idle (nothing queued), adopt one job of a node that is gone; the next scan may find another. */
  private adoptIfIdle(): void {
    const board = this.board;
    if (!board || this.loop || this.adopting || this.queue.length > 0 || this.stop.signal.aborted) return;
    this.adopting = this.adopt(board)
      .catch((err: unknown) => this.opts.log.error({ err: (err as Error).message }, 'could not record an adopted prefetch job'))
      .finally(() => (this.adopting = undefined));
  }

  private async adopt(board: JobBoard): Promise<void> {
    const found = await board.adoptOrphan();
    if (!found) return;
    // Images done stay done; the one cut off mid-way starts over (its cached blobs cost nothing).
    const job: PrefetchJob = { ...found, node: board.node, images: found.images.map((i) => (i.state === 'running' ? { ...i, state: 'queued' } : i)) };
    this.jobs.set(job.id, job);
    await this.save(job);
    this.queue.push(job.id);
    this.updateGauge();
    this.kick();
  }

  private async prune(): Promise<void> {
    // A copy of a job another node runs counts as finished here: that node keeps the job.
    const finished = [...this.jobs.values()].filter((j) => isFinished(j) || !this.runsHere(j));
    for (const job of finished.slice(0, Math.max(0, finished.length - KEPT_FINISHED_JOBS))) {
      this.jobs.delete(job.id);
      await this.opts.store.delete(job.id);
    }
  }

  private updateGauge(): void {
    this.opts.metrics.prefetchQueuedJobs.set(this.queue.length);
  }
}

/** An outage rather than an answer: the upstream unreachable, 5xx, rate limiting, a cut or timed-out transfer, the cache briefly unwritable. */
export function isTransient(err: unknown): boolean {
  for (let e: unknown = err; e instanceof Error; e = e.cause) {
    if (e instanceof RegistryError) return e.code === 'UNAVAILABLE' || e.code === 'TOOMANYREQUESTS';
    if (e instanceof FillError) return e.outcome === 'upstream_error' || e.outcome === 'timeout' || e.outcome === 'write_error';
  }
  return false;
}

function progressOf(fetch: ImageFetch): Pick<PrefetchImage, 'digest' | 'blobs' | 'blobsDone' | 'bytes' | 'bytesDone'> {
  return { ...(fetch.digest ? { digest: fetch.digest } : {}), blobs: fetch.blobs, blobsDone: fetch.blobsDone, bytes: fetch.bytes, bytesDone: fetch.bytesDone() };
}

export { PrefetchInputError };
