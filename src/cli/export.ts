import { Argument, Option } from 'commander';
import { SingleBar, Presets } from 'cli-progress';
import { createWriteStream } from 'node:fs';
import { open, rename, rm } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import type { Config } from '../config/config.ts';
import { parsePlatform, type Platform } from '../oci/manifest.ts';
import { planFromCache, summaryOf, writeFromCache, type ExportSummary } from '../transfer/export-images.ts';
import { exportThrough, fetchThrough } from '../transfer/export-remote.ts';
import { cacheLocked, serverUrl, withStoppedCache } from './cache-access.ts';
import type { CliCommand, Io } from './command.ts';

/**
 * `gantry export REF... -o FILE [--platform os/arch[/variant]]... [--fetch] [--url URL]`: cached
 * images as one archive (OCI layout + docker-save manifest.json). With Gantry stopped it reads the
 * cache directly; while Gantry serves the cache (LevelDB's lock keeps a second process out), it
 * asks the running instance (`GET /admin/export`). The file appears only when complete.
 */
export const exportCommand: CliCommand = {
  summary: 'write cached images to one archive',
  // Checked in run() rather than by commander, so `gantry export --help` and the shared flags parse alone.
  arguments: () => [new Argument('[REF...]', 'images to export (name:tag or name@digest)')],
  options: () => [
    new Option('-o, --output <FILE>', 'the archive to write (required)'),
    new Option('--platform <os/arch[/variant]>', 'only these platforms of a multi-arch image (repeatable)').argParser((v, prev: string[] | undefined) => [...(prev ?? []), v]),
    new Option('--fetch', 'pull the images through the running Gantry first'),
    new Option('--url <URL>', 'the running Gantry (default: from the config\'s listen)'),
  ],
  async run(config, options, io) {
    const refs = Array.isArray(options['args']) ? options['args'].filter((r): r is string => typeof r === 'string') : [];
    if (refs.length === 0 || typeof options['output'] !== 'string') {
      io.err(`gantry export: ${refs.length === 0 ? 'give at least one image reference' : 'give the archive to write with -o FILE'}\n`);
      return 2;
    }
    const output = resolve(options['output']);
    let platforms: Platform[];
    try {
      platforms = ((options['platform'] as string[] | undefined) ?? []).map(parsePlatform);
    } catch (err) {
      io.err(`gantry export: ${(err as Error).message}\n`);
      return 2;
    }
    const url = serverUrl(config, options);
    // Beside the output, so the rename at the end is atomic and a failure leaves no partial file.
    const temp = join(dirname(output), `.${basename(output)}.${process.pid}.partial`);
    const progress = createProgress(io);
    try {
      await claim(temp, output);
      if (options['fetch'] === true) await fetchThrough(url, refs, platforms, (s) => io.err(`${s}\n`));
      const summary = (options['fetch'] === true || (await cacheLocked(config)))
        ? await throughServer(url, refs, platforms, temp, progress, config.adminToken)
        : await fromStoppedCache(config, refs, platforms, temp, progress);
      await rename(temp, output);
      progress.stop();
      io.err(`exported ${summary ? `${summary.images} image(s), ${summary.blobs} blobs, ${summary.bytes} bytes` : `${refs.length} image(s)`} to ${output}\n`);
      return 0;
    } catch (err) {
      progress.stop();
      await rm(temp, { force: true });
      io.err(`gantry export: ${(err as Error).message}\n`);
      return 1;
    }
  },
};

/** Create the temp file before any work, so an unwritable -o fails first, naming it. */
async function claim(temp: string, output: string): Promise<void> {
  try {
    await (await open(temp, 'wx')).close();
  } catch (err) {
    throw new Error(`cannot write ${output}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
}

type Progress = { start(total: number): void; add(n: number): void; stop(): void };

/** A bar of bytes written on a TTY; elsewhere one line at the start and the summary at the end. */
function createProgress(io: Io): Progress {
  if (process.stderr.isTTY !== true) {
    return { start: (total) => io.err(`exporting ${total} bytes\n`), add: () => {}, stop: () => {} };
  }
  const bar = new SingleBar({ format: 'export [{bar}] {percentage}% {value}/{total} bytes', stream: process.stderr }, Presets.shades_classic);
  let started = false;
  return {
    start: (total) => { bar.start(total, 0); started = true; },
    add: (n) => bar.increment(n),
    stop: () => { if (started) bar.stop(); started = false; },
  };
}

async function fromStoppedCache(config: Config, refs: readonly string[], platforms: readonly Platform[], temp: string, progress: Progress): Promise<ExportSummary> {
  // Reading never evicts: no budget, no age limit.
  return withStoppedCache(config, { evict: false }, async (cache) => {
    const plan = await planFromCache({ refs, platforms }, cache, config);
    progress.start(summaryOf(plan).bytes);
    return writeFromCache(plan, cache, createWriteStream(temp), (n) => progress.add(n));
  });
}

async function throughServer(url: string, refs: readonly string[], platforms: readonly Platform[], temp: string, progress: Progress, adminToken: string | undefined): Promise<undefined> {
  await exportThrough(url, refs, platforms, temp, progress, adminToken);
  return undefined;
}
