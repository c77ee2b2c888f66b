import { LRUCache } from 'lru-cache';
import { closeFd, openFd, sizeOfFd } from './chunk-source.ts';

/** An open stored file lent to one reader; `release` when done (the descriptor may stay open for the next). */
export type LentFile = { fd: number; size: number; release(): void };

type Entry = { fd: number; size: number; readers: number; retired: boolean };

/**
 * Descriptors of recently served files, kept open: a cached blob's request then costs no open,
 * fstat and close (three thread-pool round trips, ~50 µs of event-loop time here, as much as a
 * few of its reads). Stored files are immutable (content-addressed, replaced only by identical
 * bytes), so a descriptor stays right for as long as the file is not removed; `forget` on removal
 * makes the next request open the path again (and miss if it is gone). A descriptor leaves when it
 * is forgotten or pushed out of the LRU, and is closed once its last reader releases it.
 */
export class OpenFiles {
  private readonly lru: LRUCache<string, Entry>;
  private readonly opening = new Map<string, Promise<Entry | undefined>>();
  /** Keys forgotten while being opened: their descriptor is lent once, then closed, never filed. */
  private readonly forgottenWhileOpening = new Set<string>();

  constructor(max: number) {
    this.lru = new LRUCache<string, Entry>({ max, dispose: (entry) => this.retire(entry) });
  }

  /** The file at `path` (cached under `key`), opened if needed; undefined if it does not exist. */
  async lend(key: string, path: string): Promise<LentFile | undefined> {
    let entry = this.lru.get(key);
    if (!entry) {
      let pending = this.opening.get(key);
      if (!pending) {
        pending = openEntry(path).finally(() => this.opening.delete(key));
        this.opening.set(key, pending);
        const opened = await pending;
        // Only the opener files it, so a file opened once is cached once.
        if (opened && !this.forgottenWhileOpening.delete(key)) this.lru.set(key, opened);
        else if (opened) opened.retired = true;
      }
      entry = await pending;
      if (!entry) return undefined;
    }
    entry.readers += 1;
    let released = false;
    const lent = entry;
    return {
      fd: lent.fd,
      size: lent.size,
      release: () => {
        if (released) return;
        released = true;
        lent.readers -= 1;
        if (lent.retired && lent.readers === 0) closeFd(lent.fd);
      },
    };
  }

  /** The file under `key` was removed: never lend its descriptor again. */
  forget(key: string): void {
    this.lru.delete(key);
    if (this.opening.has(key)) this.forgottenWhileOpening.add(key);
  }

  /** Close every descriptor no reader holds; the rest close as their readers finish. */
  clear(): void {
    this.lru.clear();
  }

  private retire(entry: Entry): void {
    entry.retired = true;
    if (entry.readers === 0) closeFd(entry.fd);
  }
}

async function openEntry(path: string): Promise<Entry | undefined> {
  let fd: number;
  try {
    fd = await openFd(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  try {
    return { fd, size: await sizeOfFd(fd), readers: 0, retired: false };
  } catch (err) {
    closeFd(fd);
    throw err;
  }
}
