import { Argument, Option } from 'commander';
import { MultiBar, Presets, type SingleBar } from 'cli-progress';
import { readFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { isFinished, MAX_IMAGES_PER_JOB, parsePrefetchRequest, PrefetchInputError, type PrefetchImage, type PrefetchJob, type PrefetchRequest } from '../prefetch/job.ts';
import { PrefetchApiError, PrefetchClient } from '../prefetch/prefetch-client.ts';
import type { CliCommand, Io } from './command.ts';
import { serverUrl } from './cache-access.ts';

const EXIT_USAGE = 2;
const POLL_MS = 500;
/** Long enough for the Gantry to restart (the job resumes there); bounded so a gone server ends the wait. */
const UNREACHABLE_LIMIT_MS = 60_000;

/**
 * `gantry prefetch REF... [--file LIST] [--platform os/arch]... [--pin] [--url URL] [--detach]`:
 * ask the running Gantry to fill its cache (`POST /admin/prefetch`), then follow the job until it
 * ends: a bar per image on a TTY, a line per finished image otherwise, a summary, and exit 1 if
 * any image failed, saying why.
 */
export const prefetchCommand: CliCommand = {
  summary: 'fill a running Gantry\'s cache with images, ahead of the pulls',
  arguments: () => [new Argument('[REF...]', 'images (name:tag or name@digest)')],
  options: () => [
    new Option('--file <LIST>', 'more images, one per line (# comments and blank lines are skipped)'),
    new Option('--platform <os/arch[/variant]>', 'from a multi-arch image, only these platforms (repeatable; default: all)').argParser((v, prev: string[] | undefined) => [...(prev ?? []), v]),
    new Option('--pin', 'keep the images out of eviction (gantry unpin releases them)'),
    new Option('--url <URL>', 'the running Gantry (default: from the config\'s listen)'),
    new Option('--detach', 'print the job id and return at once instead of following it'),
  ],
  async run(config, options, io) {
    let req: PrefetchRequest;
    try {
      req = await requestOf(options);
    } catch (err) {
      if (!(err instanceof PrefetchInputError)) throw err;
      io.err(`gantry prefetch: ${err.message}\n`);
      return EXIT_USAGE;
    }
    const client = new PrefetchClient(serverUrl(config, options), config.adminToken);
    try {
      const job = await client.submit(req);
      if (options['detach'] === true) {
        io.out(`${job.id}\n`);
        return 0;
      }
      io.err(`prefetch job ${job.id}: ${job.images.length} image(s)${job.platforms.length > 0 ? ` for ${job.platforms.join(', ')}` : ''}${job.pin ? ', pinned' : ''}\n`);
      const done = await follow(client, job, io);
      io.err(`${summaryOf(done)}\n`);
      return done.state === 'done' ? 0 : 1;
    } catch (err) {
      if (!(err instanceof PrefetchApiError)) throw err;
      io.err(`gantry prefetch: ${err.message}\n`);
      return err.status === 400 ? EXIT_USAGE : 1;
    }
  },
};

/** The images from the arguments and --file, checked here so a typo fails before anything is sent. */
async function requestOf(options: Readonly<Record<string, unknown>>): Promise<PrefetchRequest> {
  const images = Array.isArray(options['args']) ? options['args'].filter((r): r is string => typeof r === 'string') : [];
  const file = options['file'];
  if (typeof file === 'string') {
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch (err) {
      throw new PrefetchInputError(`--file ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
    const lines = text.split('\n').map((l) => l.replace(/#.*/, '').trim()).filter((l) => l !== '');
    if (lines.length > MAX_IMAGES_PER_JOB) throw new PrefetchInputError(`--file ${file}: at most ${MAX_IMAGES_PER_JOB} images (has ${lines.length})`);
    images.push(...lines);
  }
  if (images.length === 0) throw new PrefetchInputError('name at least one image (arguments or --file LIST)');
  return parsePrefetchRequest({ images, platforms: options['platform'] ?? [], pin: options['pin'] === true });
}

/** Poll the job until it has finished, reporting progress; rides out a restart of the Gantry. */
async function follow(client: PrefetchClient, first: PrefetchJob, io: Io): Promise<PrefetchJob> {
  const view = process.stderr.isTTY === true ? barsView(first) : linesView(io);
  let job = first;
  let unreachableSince: number | undefined;
  try {
    for (;;) {
      view.update(job);
      if (isFinished(job)) return job;
      await sleep(POLL_MS);
      try {
        job = await client.job(job.id);
        unreachableSince = undefined;
      } catch (err) {
        if (!(err instanceof PrefetchApiError) || err.status !== 0) throw err;
        unreachableSince ??= Date.now();
        if (Date.now() - unreachableSince > UNREACHABLE_LIMIT_MS) throw new PrefetchApiError(0, `${err.message}; job ${job.id} goes on when it is back (GET /admin/prefetch/${job.id})`);
      }
    }
  } finally {
    view.stop();
  }
}

type View = { update(job: PrefetchJob): void; stop(): void };

/** One line per image as it finishes: what it is, or why it failed. */
function linesView(io: Io): View {
  const reported = new Set<number>();
  return {
    update(job) {
      job.images.forEach((image, i) => {
        if (reported.has(i) || (image.state !== 'done' && image.state !== 'failed')) return;
        reported.add(i);
        io.err(`${lineOf(image)}\n`);
      });
    },
    stop: () => undefined,
  };
}

/** A bar of bytes per image; failures are printed as lines under the bars at the end. */
function barsView(first: PrefetchJob): View {
  const multi = new MultiBar({ format: '{ref} [{bar}] {percentage}% {value}/{total} bytes {state}', stream: process.stderr, hideCursor: true, clearOnComplete: false }, Presets.shades_classic);
  const bars: SingleBar[] = first.images.map((image) => multi.create(Math.max(image.bytes, 1), 0, { ref: image.ref, state: image.state }));
  let last = first;
  return {
    update(job) {
      last = job;
      job.images.forEach((image, i) => {
        bars[i]?.setTotal(Math.max(image.bytes, 1));
        bars[i]?.update(image.state === 'done' ? Math.max(image.bytes, 1) : image.bytesDone, { ref: image.ref, state: image.state });
      });
    },
    stop() {
      multi.stop();
      for (const image of last.images) if (image.state === 'failed') process.stderr.write(`${lineOf(image)}\n`);
    },
  };
}

function lineOf(image: PrefetchImage): string {
  return image.state === 'failed'
    ? `failed ${image.ref}: ${image.error ?? 'unknown error'}`
    : `prefetched ${image.ref} ${image.digest ?? ''} (${image.blobs} blobs, ${image.bytes} bytes)`;
}

function summaryOf(job: PrefetchJob): string {
  const done = job.images.filter((i) => i.state === 'done');
  const failed = job.images.length - done.length;
  const blobs = done.reduce((n, i) => n + i.blobs, 0);
  const bytes = done.reduce((n, i) => n + i.bytes, 0);
  return `prefetch job ${job.id}: ${done.length} image(s) done${failed > 0 ? `, ${failed} failed` : ''}, ${blobs} blobs, ${bytes} bytes`;
}
