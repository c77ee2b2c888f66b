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
import { isFinished, isPrefetchJob, jobStateOf, newJob, PrefetchInputError, type PrefetchImage, type PrefetchJob, type PrefetchRequest } from './job.ts';

/**
 * Before giving an image up on an upstream outage (down, 5xx, 429, cut transfers): about two
 * minutes of waits, the breaker probing meanwhile, so a link that drops for a moment does not
 * fail a night's prefetch, and one that stays down does not hold the queue for long.
 */
const RETRY_DELAYS_MS = [1_000, 2_000, 4_000, 8_000, 16_000, 30_000, 60_000];

/** Finished jobs kept for `GET /admin/prefetch`; older ones are deleted. */
const KEPT_FINISHED_JOBS = 100;

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
};

/**
 * Prefetch jobs: accepted at once (202), run one at a time in the background, persisted in the
 * cache index as they progress, and resumed at start-up from the first image not done (its blobs
 * already cached cost nothing). Images of a job run in order; blobs of an image a few at a time.
 */
export class PrefetchJobs {
  private readonly jobs = new Map<string, PrefetchJob>();
  private readonly queue: string[] = [];
  /** Progress of the image running now, read when a job is asked for. */
  private running: { image: PrefetchImage; fetch: ImageFetch } | undefined;
  private loop: Promise<void> | undefined;
  private readonly stop = new AbortController();
  private started = false;
  private readonly opts: PrefetchJobsOptions;
  private readonly now: () => Date;
  private readonly retryDelaysMs: readonly number[];

  constructor(opts: PrefetchJobsOptions) {
    this.opts = opts;
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
      if (isFinished(job)) continue;
      for (const image of job.images) if (image.state === 'running') image.state = 'queued';
      this.queue.push(job.id);
    }
    if (this.queue.length > 0) this.opts.log.info({ jobs: this.queue.length }, 'resuming prefetch jobs');
    this.updateGauge();
  }

  /** Start running queued jobs (serving has begun). */
  start(): void {
    this.started = true;
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
    await this.save(job);
    this.jobs.set(job.id, job);
    this.queue.push(job.id);
    this.opts.log.info({ job: job.id, images: job.images.length, platforms: job.platforms, pin: job.pin }, 'prefetch job queued');
    this.updateGauge();
    this.kick();
    return this.view(job);
  }

  /** The job with live progress of its running image; undefined if unknown. */
  get(id: string): PrefetchJob | undefined {
    const job = this.jobs.get(id);
    return job ? this.view(job) : undefined;
  }

  /** Every kept job, newest first. */
  list(): PrefetchJob[] {
    return [...this.jobs.values()].reverse().map((j) => this.view(j));
  }

  /** Stop after the current step; unfinished jobs stay queued in the index and resume at the next start. */
  async close(): Promise<void> {
    this.stop.abort();
    await this.loop;
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
      await this.runImage(job, image);
      if (this.stop.signal.aborted) return;
    }
    job.finishedAt = this.now().toISOString();
    job.state = jobStateOf(job.images);
    await this.save(job);
    const failed = job.images.filter((i) => i.state === 'failed').length;
    this.opts.log[failed > 0 ? 'warn' : 'info']({ job: job.id, images: job.images.length, failed }, 'prefetch job finished');
  }

  private async runImage(job: PrefetchJob, image: PrefetchImage): Promise<void> {
    image.state = 'running';
    job.state = 'running';
    await this.save(job);
    let fetch: ImageFetch | undefined;
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
      this.running = undefined;
    }
    if (fetch) Object.assign(image, progressOf(fetch));
    this.opts.metrics.prefetchImages.inc({ outcome: image.state === 'queued' ? 'interrupted' : image.state });
    await this.save(job);
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

  private async save(job: PrefetchJob): Promise<void> {
    await this.opts.store.put(job.id, job);
  }

  private async prune(): Promise<void> {
    const finished = [...this.jobs.values()].filter(isFinished);
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
