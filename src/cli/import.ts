import { Argument, Option } from 'commander';
import { SingleBar } from 'cli-progress';
import type { Config } from '../config/config.ts';
import { ImportError, openArchive } from '../transfer/archive-source.ts';
import { importArchive, type ImportProgress, type ImportSummary, type ImportTarget } from '../transfer/import.ts';
import { repositoryOf } from '../transfer/import-plan.ts';
import { formatSummary } from '../transfer/import-report.ts';
import { importThroughServer } from '../transfer/import-remote.ts';
import { cacheLocked, serverUrl, withStoppedCache } from './cache-access.ts';
import type { CliCommand, Io } from './command.ts';

const EXIT_USAGE = 2;

/**
 * `gantry import PATH... [--upstream HOST] [--repository NAME] [--pin]`: put docker-save tarballs, OCI
 * archives and OCI layout directories into the cache. With Gantry stopped it opens the cache
 * itself; while a Gantry serves it (LevelDB's lock says so), it sends each archive to that
 * instance's `POST /admin/import`, which runs the same import.
 */
export const importCommand: CliCommand = {
  summary: 'import docker save tars, OCI archives and layout dirs into the cache',
  arguments: () => [new Argument('[PATH...]', 'archives (tar) or OCI layout directories')],
  options: () => [
    new Option('--upstream <HOST>', 'the configured upstream the images land under (default: the default upstream)'),
    new Option('--repository <NAME>', 'repository for images named by a bare tag or not at all'),
    new Option('--pin', 'keep every imported image out of eviction until `gantry unpin`'),
    new Option('--url <URL>', 'the running Gantry to import through when the cache is locked (default: from --listen)'),
  ],
  async run(config, options, io) {
    const target = targetOf(config, options, io);
    if (!target) return EXIT_USAGE;
    const paths = Array.isArray(options['args']) ? options['args'].filter((p): p is string => typeof p === 'string') : [];
    if (paths.length === 0) {
      io.err('gantry import: name at least one PATH (a tar archive or an OCI layout directory)\n');
      return EXIT_USAGE;
    }
    try {
      const summaries = (await cacheLocked(config))
        ? await throughServer(paths, target, serverUrl(config, options), io, config.adminToken)
        : await offline(config, paths, target, io);
      io.out(formatSummary(summaries));
      return 0;
    } catch (err) {
      if (!(err instanceof ImportError)) throw err;
      io.err(`gantry import: ${err.message}\n`);
      return 1;
    }
  },
};

function targetOf(config: Config, options: Readonly<Record<string, unknown>>, io: Io): ImportTarget | undefined {
  const explicit = typeof options['upstream'] === 'string';
  const upstream = typeof options['upstream'] === 'string' ? options['upstream'].toLowerCase() : config.defaultUpstream;
  const pin = options['pin'] === true ? { pin: true } : {};
  if (!config.upstreams.some((u) => u.host === upstream)) {
    io.err(`gantry import: --upstream ${upstream} is not a configured upstream (${config.upstreams.map((u) => u.host).join(', ')})\n`);
    return undefined;
  }
  // Without --upstream, a name's own registry picks its upstream when one is configured for it.
  const where: ImportTarget = explicit ? { upstream } : { upstream, byRegistry: config.upstreams.map((u) => u.host) };
  const raw = options['repository'];
  if (typeof raw !== 'string') return { ...where, ...pin };
  try {
    return { ...where, repository: repositoryOf(raw), ...pin };
  } catch {
    io.err(`gantry import: --repository ${JSON.stringify(raw)} is not a valid repository name\n`);
    return undefined;
  }
}

async function offline(config: Config, paths: readonly string[], target: ImportTarget, io: Io): Promise<ImportSummary[]> {
  return withStoppedCache(config, { evict: true }, async (cache) => {
    const out: ImportSummary[] = [];
    for (const p of paths) out.push(await withProgress(p, io, (progress) => openArchive(p).then((src) => importArchive(src, cache, target, progress))));
    return out;
  });
}

async function throughServer(paths: readonly string[], target: ImportTarget, url: string, io: Io, adminToken: string | undefined): Promise<ImportSummary[]> {
  io.err(`gantry import: the cache is in use; importing through the running Gantry at ${url}\n`);
  const out: ImportSummary[] = [];
  for (const p of paths) out.push(await withProgress(p, io, (progress) => importThroughServer(p, target, url, progress, adminToken)));
  return out;
}

/** A bar of bytes read on a TTY, plain lines otherwise. */
async function withProgress<T>(path: string, io: Io, work: (progress: ImportProgress) => Promise<T>): Promise<T> {
  if (!process.stderr.isTTY) {
    io.err(`importing ${path}\n`);
    return work(() => undefined);
  }
  const bar = new SingleBar({ format: `${path} pass {pass} | {value} bytes`, stream: process.stderr, noTTYOutput: false });
  bar.start(0, 0, { pass: 1 });
  try {
    return await work((e) => bar.update(e.bytes, { pass: e.pass }));
  } finally {
    bar.stop();
  }
}
