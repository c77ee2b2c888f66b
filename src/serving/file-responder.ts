import { readSync } from 'node:fs';
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
    const file = await this.files.lend(plan.file, plan.file);
    if (!file) return 'gone';
    if (file.size !== plan.size) {
      // Never serve a file that disagrees with its index entry; the main process sorts it out.
      file.release();
      this.files.forget(plan.file);
      return 'gone';
    }
    const start = range?.start ?? 0;
    const end = range?.end ?? plan.size;
    if (range) res.writeHead(206, { ...headers, [CONTENT_RANGE]: `bytes ${start}-${end - 1}/${plan.size}`, 'Content-Length': end - start });
    else res.writeHead(200, { ...headers, 'Content-Length': plan.size });
    this.pump(res, file, start, end, done);
    return 'sent';
  }

  /** The file was removed: its descriptor is never lent again. */
  forget(file: string): void {
    this.files.forget(file);
  }

  private pump(res: ServerResponse, file: LentFile, start: number, end: number, done: (s: Sent) => void): void {
    const big = this.bigStreams < BIG.streams;
    if (big) this.bigStreams += 1;
    const mine: Buffer[] = [];
    const free: Buffer[] = [];
    let pos = start;
    let finished = false;
    const finish = (): void => {
      if (finished) return;
      finished = true;
      if (big) this.bigStreams -= 1;
      file.release();
      // The socket is closed: nothing references the buffers any more.
      for (const b of mine) this.giveBack(b, big);
      done({ status: res.statusCode, bytes: pos - start });
    };
    const next = (): void => {
      while (pos < end && !res.destroyed) {
        let buf = free.pop();
        if (!buf && mine.length < 2) {
          buf = this.take(big);
          mine.push(buf);
        }
        if (!buf) return; // both in flight: a write callback resumes
        let n: number;
        try {
          n = readSync(file.fd, buf, 0, Math.min(buf.length, end - pos), pos);
          if (n === 0) throw new Error(`blob file ended at ${pos} of ${end} bytes`);
        } catch (err) {
          res.destroy(err as Error);
          return;
        }
        pos += n;
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
