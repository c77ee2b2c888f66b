import { Argument, Option } from 'commander';
import { parseImageRef } from '../oci/image-ref.ts';
import { PinError, releasePin, type PinView } from '../transfer/pins.ts';
import { unpinThrough } from '../transfer/pins-remote.ts';
import { cacheLocked, serverUrl, withStoppedCache } from './cache-access.ts';
import type { CliCommand, Io } from './command.ts';

const EXIT_USAGE = 2;

/** Releases one ref: the pin as it was, or a PinError naming the ref. */
type Release = (ref: string) => Promise<PinView>;

/**
 * `gantry unpin REF... [--url URL]`: release pins, so their images are evictable again. REF is an
 * image reference as `docker pull` takes it, or a ref `gantry pins` printed. With Gantry stopped
 * it opens the cache itself (and evicts what the budget then asks for, as the server would);
 * while a Gantry serves it, each ref goes to that instance's `DELETE /admin/pins`.
 */
export const unpinCommand: CliCommand = {
  summary: 'release pinned images, so eviction may take them again',
  // Checked in run() rather than by commander, so `gantry unpin --help` parses alone.
  arguments: () => [new Argument('[REF...]', 'pinned images (name:tag or name@digest)')],
  options: () => [new Option('--url <URL>', 'the running Gantry to ask when the cache is locked (default: from --listen)')],
  async run(config, options, io) {
    const refs = Array.isArray(options['args']) ? options['args'].filter((r): r is string => typeof r === 'string') : [];
    const usage = usageError(refs);
    if (usage !== undefined) {
      io.err(`gantry unpin: ${usage}\n`);
      return EXIT_USAGE;
    }
    try {
      return (await cacheLocked(config))
        ? await releaseAll(refs, io, (ref) => unpinThrough(serverUrl(config, options), ref, config.adminToken))
        : await withStoppedCache(config, { evict: true }, (cache) => releaseAll(refs, io, (ref) => releasePin(ref, cache, config)));
    } catch (err) {
      io.err(`gantry unpin: ${(err as Error).message}\n`);
      return 1;
    }
  },
};

/** Every ref is checked before any is released, so a typo in the list releases nothing. */
function usageError(refs: readonly string[]): string | undefined {
  if (refs.length === 0) return 'give at least one image reference';
  for (const ref of refs) {
    try {
      parseImageRef(ref);
    } catch (err) {
      return (err as Error).message;
    }
  }
  return undefined;
}

/** One line a ref; a ref that names no pin is a line on stderr and makes the exit code 1, the others still go. */
async function releaseAll(refs: readonly string[], io: Io, release: Release): Promise<number> {
  let code = 0;
  for (const ref of refs) {
    try {
      const p = await release(ref);
      io.out(`unpinned ${p.ref} (${p.digests} digests, ${p.cachedDigests} cached, ${p.bytes} bytes)\n`);
    } catch (err) {
      if (!(err instanceof PinError)) throw err;
      io.err(`gantry unpin: ${err.message}\n`);
      code = 1;
    }
  }
  return code;
}

