import { closeSync, fstatSync, openSync, readSync, statSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { parseRange } from '../http/range.ts';
import { RegistryError, toErrorBody } from '../oci/errors.ts';
import { CONTENT_RANGE, DOCKER_API_VERSION, DOCKER_API_VERSION_VALUE, REQUEST_ID, X_CACHE } from '../oci/headers.ts';
import { OpenFiles, type LentFile } from '../store/open-files.ts';
import type { AccelPlan } from '../http/accel.ts';

/** Descriptors kept open for hot files, as the main process's store does. */
const OPEN_FILES = 256;
const MiB = 1024 * 1024;
/**
 * Buffers: 512 KiB while few bodies are being sent (a 1 MiB layer in two reads and two writes;
 * with 64 KiB reads, per-chunk JavaScript cost a third more CPU per request, bench/README.md),
 * 64 KiB each for bodies beyond that, so many slow clients cannot take hundreds of MiB.
 */
const BIG = { bytes: MiB / 2, streams: 32 };
const SMALL = { bytes: 64 * 1024 };
/**
 * Bytes one body may write before letting other connections have a turn of the event loop. At
 * 64 connections, 256 KiB against 2 MiB: 1 MiB + 1 B 0.65x vs 0.75x nginx's req/s, but p99 1.07x vs
 * 3.6x nginx's; 4 MiB 0.93x vs 0.71x; 32 MiB 1.03x vs 0.96x (bench/README.md).
 */
const TURN_BYTES = 256 * 1024;
/** How often a body waiting on a download still being written looks at its file again. */
const GROWING_POLL_MS = 5;
/** A download whose file has not grown for this long is given up on (its own timeouts are shorter). */
const GROWING_STALL_MS = 10 * 60_000;
/** Free buffers kept for reuse beyond those in use. */
const KEEP_FREE = { big: 8, small: 64 };

export type Sent = { status: number; bytes: number };

/**
 * Answers a request from a plan: the object's file, read with blocking reads into recycled
 * buffers, as nginx does. Stored objects are in the page cache when hot, where a read costs a few
 * tens of microseconds; a thread-pool round trip per chunk cost more than the read itself, and a
 * serving process stalls only its own connections on a cold read.
 */
export class FileResponder {
  private readonly files = new OpenFiles(OPEN_FILES);
  private readonly freeBig: Buffer[] = [];
  private readonly freeSmall: Buffer[] = [];
  private bigStreams = 0;

  /**
   * Send the plan's object (HEAD, GET, or a single Range). Resolves 'gone' without writing
   * anything when the file is not there any more (the caller then asks the main process);
   * otherwise resolves once the answer is under way, and calls `done` when it has ended.
   */
  async send(req: IncomingMessage, res: ServerResponse, plan: AccelPlan, headers: Record<string, string | number>, done: (s: Sent) => void): Promise<'sent' | 'gone'> {
    let range: { start: number; end: number } | undefined;
    try {
      range = req.method === 'GET' ? parseRange(req.headers.range, plan.size) : undefined;
    } catch (err) {
      if (!(err instanceof RegistryError)) throw err;
      sendError(res, err, { [REQUEST_ID]: String(headers[REQUEST_ID] ?? ''), [X_CACHE]: 'HIT' });
      done({ status: err.status, bytes: 0 });
      return 'sent';
    }
    if (req.method === 'HEAD') {
      res.writeHead(200, { ...headers, 'Content-Length': plan.size });
      res.end();
      done({ status: 200, bytes: 0 });
      return 'sent';
    }
    if (plan.filling !== undefined) {
      const growing = openGrowing(plan.filling, plan.file);
      // Gone from tmp: committed since (then it is the stored file) or failed (then it is a miss again).
      if (!growing) return this.send(req, res, { ...plan, filling: undefined }, headers, done);
      writeHeadFor(res, headers, range, plan.size);
      this.pump(res, growing, range?.start ?? 0, range?.end ?? plan.size, done);
      return 'sent';
    }
    const file = await this.files.lend(plan.file, plan.file);
    if (!file) return 'gone';
    if (file.size !== plan.size) {
      // Never serve a file that disagrees with its index entry; the main process sorts it out.
      file.release();
      this.files.forget(plan.file);
      return 'gone';
    }
    writeHeadFor(res, headers, range, plan.size);
    this.pump(res, storedFile(file), range?.start ?? 0, range?.end ?? plan.size, done);
    return 'sent';
  }

  /** The file was removed: its descriptor is never lent again. */
  forget(file: string): void {
    this.files.forget(file);
  }

  private pump(res: ServerResponse, file: Readable, start: number, end: number, done: (s: Sent) => void): void {
    // A download being tailed comes at the upstream's pace: small buffers are plenty.
    const big = !file.growing && this.bigStreams < BIG.streams;
    if (big) this.bigStreams += 1;
    const mine: Buffer[] = [];
    const free: Buffer[] = [];
    let pos = start;
    let finished = false;
    /** Set while the body waits for its next turn (or for a download to grow): cancels that wait. */
    let waiting: (() => void) | undefined;
    const finish = (): void => {
      if (finished) return;
      finished = true;
      waiting?.();
      if (big) this.bigStreams -= 1;
      file.release();
      // The socket is closed: nothing references the buffers any more.
      for (const b of mine) this.giveBack(b, big);
      done({ status: res.statusCode, bytes: pos - start });
    };
    // Bytes sent since this body last gave the event loop back. Counted across calls: write
    // callbacks of a fast socket run as microtasks, so a chain of them would keep the loop (new
    // requests, answers from the main process, other bodies) waiting for a whole body.
    let sentThisTurn = 0;
    const next = (): void => {
      if (waiting !== undefined) return;
      while (pos < end && !res.destroyed) {
        if (sentThisTurn >= TURN_BYTES) {
          const turn = setImmediate(() => {
            waiting = undefined;
            sentThisTurn = 0;
            next();
          });
          waiting = () => clearImmediate(turn);
          return;
        }
        let limit: number;
        try {
          limit = Math.min(end, file.readable(end));
        } catch (err) {
          res.destroy(err as Error);
          return;
        }
        if (pos >= limit) {
          // A download still being written: look again shortly (it cuts us if it fails).
          const poll = setTimeout(() => {
            waiting = undefined;
            sentThisTurn = 0;
            next();
          }, GROWING_POLL_MS);
          waiting = () => clearTimeout(poll);
          return;
        }
        let buf = free.pop();
        if (!buf && mine.length < 2) {
          buf = this.take(big);
          mine.push(buf);
        }
        if (!buf) return; // both in flight: a write callback resumes
        let n: number;
        try {
          n = readSync(file.fd, buf, 0, Math.min(buf.length, limit - pos), pos);
          if (n === 0) throw new Error(`blob file ended at ${pos} of ${end} bytes`);
        } catch (err) {
          res.destroy(err as Error);
          return;
        }
        pos += n;
        sentThisTurn += n;
        const held = buf;
        const ok = res.write(n === buf.length ? buf : buf.subarray(0, n), () => {
          free.push(held);
          if (!res.writableNeedDrain) next();
        });
        if (!ok) return; // 'drain' resumes
      }
      if (pos >= end && !res.writableEnded && !res.destroyed) res.end();
    };
    res.on('drain', next);
    res.once('close', finish);
    next();
  }

  private take(big: boolean): Buffer {
    return (big ? this.freeBig.pop() : this.freeSmall.pop()) ?? Buffer.allocUnsafeSlow(big ? BIG.bytes : SMALL.bytes);
  }

  private giveBack(buf: Buffer, big: boolean): void {
    const pool = big ? this.freeBig : this.freeSmall;
    if (pool.length < (big ? KEEP_FREE.big : KEEP_FREE.small)) pool.push(buf);
  }
}

/** An OCI error answer, with the headers the main process's error answers carry. */
export function sendError(res: ServerResponse, err: RegistryError, extra: Record<string, string> = {}): void {
  const body = JSON.stringify(toErrorBody(err));
  res.writeHead(err.status, { ...err.headers, ...extra, [DOCKER_API_VERSION]: DOCKER_API_VERSION_VALUE, 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) });
  res.end(body);
}

/** A file a body is read from: how far it may be read now, and how to let it go. */
type Readable = { fd: number; growing: boolean; readable(end: number): number; release(): void };

function storedFile(file: LentFile): Readable {
  return { fd: file.fd, growing: false, readable: () => file.size, release: () => file.release() };
}

/**
 * A download's file while it is written (Fill's rules, across processes): bytes are readable as
 * the file grows, except the blob's last byte, which waits until the download is verified and
 * moved into place (`final` is then this very file); a file unlinked without getting there is a
 * failed download, and the body is cut. Undefined if the file is already gone from tmp.
 */
function openGrowing(path: string, final: string): Readable | undefined {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  const ino = fstatSync(fd).ino;
  let committed = false;
  let lastGrowth = Date.now();
  let lastSize = -1;
  return {
    fd,
    growing: true,
    readable(end: number): number {
      const st = fstatSync(fd);
      if (st.size !== lastSize) {
        lastSize = st.size;
        lastGrowth = Date.now();
      }
      // Whether it was moved into place matters only for the held-back byte (a stat per chunk cost
      // more than the chunk's copy when it threw on the not-yet-existing path).
      if (!committed && st.size >= end - 1) committed = statSync(final, { throwIfNoEntry: false })?.ino === ino;
      if (committed) return st.size;
      if (st.nlink === 0) throw new Error('the download failed (its file was removed before it was verified)');
      if (Date.now() - lastGrowth > GROWING_STALL_MS) throw new Error('the download stopped growing');
      return Math.min(st.size, end - 1);
    },
    release: () => closeSync(fd),
  };
}

function writeHeadFor(res: ServerResponse, headers: Record<string, string | number>, range: { start: number; end: number } | undefined, size: number): void {
  if (range) res.writeHead(206, { ...headers, [CONTENT_RANGE]: `bytes ${range.start}-${range.end - 1}/${size}`, 'Content-Length': range.end - range.start });
  else res.writeHead(200, { ...headers, 'Content-Length': size });
}
