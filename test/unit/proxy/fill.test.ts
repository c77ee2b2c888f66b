import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { Readable } from 'node:stream';
import type { BlobWriter } from '../../../src/store/blob-store-api.ts';
import { FsBlobStore } from '../../../src/store/blob-store.ts';
import { readFully, toReadable } from '../../../src/store/chunk-source.ts';
import { Fill, FillError, type FillOutcome } from '../../../src/proxy/fill.ts';
import { digestOf, type Digest } from '../../../src/oci/digest.ts';

// ---------------------------------------------------------------------------
// Helpers

/** A fill's bytes [start, end) as a stream, one new buffer per chunk. */
function readerOf(fill: Fill, start?: number, end?: number): Readable {
  return toReadable(fill.openSource(start, end), 64 * 1024);
}

/** A promise with its resolve exposed. */
function deferred<T = void>(): { promise: Promise<T>; resolve: (v: T) => void } {
  let resolve!: (v: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}

/**
 * An upstream body under the test's control: chunks are handed to the fill
 * only when pushed, so the test decides exactly when data "arrives".
 */
class Feed implements AsyncIterable<Uint8Array> {
  private readonly items: Array<{ chunk: Uint8Array } | { end: true } | { error: Error }> = [];
  private wake: (() => void) | undefined;

  push(...chunks: Uint8Array[]): void {
    for (const chunk of chunks) this.items.push({ chunk });
    this.poke();
  }

  end(): void {
    this.items.push({ end: true });
    this.poke();
  }

  fail(error: Error): void {
    this.items.push({ error });
    this.poke();
  }

  /** Push all of `bytes` in chunks of `size`, then end. */
  pushAll(bytes: Uint8Array, size: number): void {
    for (let i = 0; i < bytes.length; i += size) this.push(bytes.subarray(i, i + size));
    this.end();
  }

  private poke(): void {
    const w = this.wake;
    this.wake = undefined;
    w?.();
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<Uint8Array> {
    for (;;) {
      while (this.items.length === 0) await new Promise<void>((r) => (this.wake = r));
      const item = this.items.shift()!;
      if ('error' in item) throw item.error;
      if ('end' in item) return;
      yield item.chunk;
    }
  }
}

/** Resolves once `pred()` holds, re-checking on every fill 'change'. */
function until(fill: Fill, pred: () => boolean): Promise<void> {
  return new Promise((resolve) => {
    const check = (): void => {
      if (pred()) {
        fill.off('change', check);
        resolve();
      }
    };
    fill.on('change', check);
    check();
  });
}

/** Follows a reader: bytes so far, and promises for reaching a count and for the end. */
function follow(r: Readable): {
  received: () => number;
  bytes: () => Buffer;
  reached: (n: number) => Promise<void>;
  ended: Promise<Buffer>;
} {
  const chunks: Buffer[] = [];
  let count = 0;
  const waiters: Array<{ n: number; resolve: () => void }> = [];
  const ended = new Promise<Buffer>((resolve, reject) => {
    r.on('data', (c: Buffer) => {
      chunks.push(c);
      count += c.length;
      for (const w of waiters.filter((w) => count >= w.n)) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve();
      }
    });
    r.once('end', () => resolve(Buffer.concat(chunks)));
    r.once('error', reject);
  });
  ended.catch(() => undefined); // tests that expect an error await it themselves
  return {
    received: () => count,
    bytes: () => Buffer.concat(chunks),
    reached: (n) => {
      if (count >= n) return Promise.resolve();
      const d = deferred();
      waiters.push({ n, resolve: d.resolve });
      return d.promise;
    },
    ended,
  };
}

let dir: string;
before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'gantry-fill-test-'));
});
after(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

type Harness = {
  fill: Fill;
  feed: Feed;
  /** The store's temp directory: empty again once a failed fill has aborted its write. */
  tmpDir: string;
  commits: Array<{ digest: Digest; size: number | undefined; contents: Buffer }>;
  /** Resolves when commit() is entered. */
  commitEntered: Promise<void>;
  /** Lets a gated commit() return. */
  releaseCommit: () => void;
  /** True once commit() has returned. */
  commitReturned: () => boolean;
  run: () => Promise<FillOutcome>;
};

async function makeFill(opts: {
  digest: Digest;
  expectedSize: number | undefined;
  gateCommit?: boolean;
  commitError?: Error;
}): Promise<Harness> {
  const store = new FsBlobStore(path.join(dir, `store-${randomUUID()}`));
  await store.init();
  const inner = await store.createWriter(opts.digest);
  const commits: Harness['commits'] = [];
  const entered = deferred();
  const gate = deferred();
  if (!opts.gateCommit) gate.resolve();
  let returned = false;
  const feed = new Feed();
  // The real file writer, with a commit the test can watch, hold and fail.
  const writer: BlobWriter = {
    digest: inner.digest,
    get written() {
      return inner.written;
    },
    write: (chunks) => inner.write(chunks),
    readAt: (buf, position) => inner.readAt(buf, position),
    commit: async (size) => {
      await inner.commit(size);
      const opened = await store.openRead(opts.digest);
      commits.push({ digest: opts.digest, size: inner.written, contents: opened ? await readFully(opened.source, opened.size) : Buffer.alloc(0) });
      entered.resolve();
      await gate.promise;
      if (opts.commitError) {
        await store.remove(opts.digest); // as the cache does when indexing fails: never a blob without its entry
        throw opts.commitError;
      }
      returned = true;
    },
    abort: () => inner.abort(),
    close: () => inner.close(),
  };
  const fill = new Fill({
    digest: opts.digest,
    expectedSize: opts.expectedSize,
    writer,
    openCommitted: async (range) => (await store.openRead(opts.digest, range))?.source,
  });
  return {
    fill,
    feed,
    tmpDir: path.join(store.root, 'tmp'),
    commits,
    commitEntered: entered.promise,
    releaseCommit: () => gate.resolve(),
    commitReturned: () => returned,
    run: () => fill.run(feed),
  };
}

/** True while the store's temp directory holds a write in progress. */
async function tempLeft(h: Harness): Promise<boolean> {
  return (await readdir(h.tmpDir)).length > 0;
}

const blob = (n: number): Buffer => randomBytes(n);

// ---------------------------------------------------------------------------

describe('Fill: the happy path', () => {
  test('a reader created before any data arrives receives every byte and ends only after commit', async () => {
    const bytes = blob(10_000);
    const h = await makeFill({ digest: digestOf(bytes), expectedSize: bytes.length, gateCommit: true });
    const reader = follow(readerOf(h.fill));
    let commitReturnedAtEnd: boolean | undefined;
    const endSeen = reader.ended.then((b) => {
      commitReturnedAtEnd = h.commitReturned();
      return b;
    });

    const outcome = h.run();
    h.feed.push(bytes.subarray(0, 3000));
    await reader.reached(3000);
    h.feed.push(bytes.subarray(3000, 7000));
    h.feed.push(bytes.subarray(7000));
    h.feed.end();
    await h.commitEntered;
    assert.equal(commitReturnedAtEnd, undefined, 'the reader must not end while commit is pending');
    h.releaseCommit();

    assert.equal(await outcome, 'committed');
    assert.deepEqual(await endSeen, bytes);
    assert.equal(commitReturnedAtEnd, true);
    assert.equal(h.fill.state, 'committed');
    assert.equal(h.fill.written, bytes.length);
    assert.equal(h.fill.error, undefined);
  });

  test('commit is called once with the digest, the size, and the complete verified bytes stored', async () => {
    const bytes = blob(4096);
    const h = await makeFill({ digest: digestOf(bytes), expectedSize: bytes.length });
    h.feed.pushAll(bytes, 1000);
    assert.equal(await h.run(), 'committed');
    assert.equal(h.commits.length, 1);
    assert.equal(h.commits[0]?.digest, digestOf(bytes));
    assert.equal(h.commits[0]?.size, bytes.length);
    assert.deepEqual(h.commits[0]?.contents, bytes);
  });

  test('without an expected size (no Content-Length) the fill still verifies and commits', async () => {
    const bytes = blob(5000);
    const h = await makeFill({ digest: digestOf(bytes), expectedSize: undefined });
    const reader = follow(readerOf(h.fill));
    h.feed.pushAll(bytes, 999);
    assert.equal(await h.run(), 'committed');
    assert.deepEqual(await reader.ended, bytes);
    assert.equal(h.commits[0]?.size, bytes.length);
  });

  test('an empty blob commits and its reader ends with zero bytes', async () => {
    const bytes = Buffer.alloc(0);
    const h = await makeFill({ digest: digestOf(bytes), expectedSize: 0 });
    const reader = follow(readerOf(h.fill));
    h.feed.end();
    assert.equal(await h.run(), 'committed');
    assert.equal((await reader.ended).length, 0);
    assert.equal(h.commits[0]?.size, 0);
  });

  test('a sha512 digest is verified with sha512', async () => {
    const bytes = blob(3000);
    const h = await makeFill({ digest: digestOf(bytes, 'sha512'), expectedSize: bytes.length });
    h.feed.pushAll(bytes, 1024);
    assert.equal(await h.run(), 'committed');
  });

  test('done resolves once the fill has ended', async () => {
    const bytes = blob(100);
    const h = await makeFill({ digest: digestOf(bytes), expectedSize: bytes.length });
    let doneSeen = false;
    void h.fill.done.then(() => (doneSeen = true));
    h.feed.pushAll(bytes, 10);
    await h.run();
    await h.fill.done;
    assert.equal(doneSeen, true);
  });
});

describe('Fill: the last byte is held back until the digest is verified', () => {
  test('with a known size, a reader has exactly size-1 bytes while commit is pending, then the rest', async () => {
    const bytes = blob(50_000);
    const h = await makeFill({ digest: digestOf(bytes), expectedSize: bytes.length, gateCommit: true });
    const reader = follow(readerOf(h.fill));
    const outcome = h.run();
    h.feed.pushAll(bytes, 7000);

    await h.commitEntered;
    await reader.reached(bytes.length - 1);
    assert.equal(h.fill.written, bytes.length, 'every byte is on disk');
    assert.equal(h.fill.readableLimit(undefined), bytes.length - 1);
    assert.equal(reader.received(), bytes.length - 1);
    assert.deepEqual(reader.bytes(), bytes.subarray(0, bytes.length - 1));

    h.releaseCommit();
    assert.equal(await outcome, 'committed');
    assert.deepEqual(await reader.ended, bytes);
  });

  test('a range reader holds back the last byte of its own range, even once the rest of the blob has arrived', async () => {
    const bytes = blob(20_000);
    const h = await makeFill({ digest: digestOf(bytes), expectedSize: bytes.length, gateCommit: true });
    const reader = follow(readerOf(h.fill, 100, 200));
    const outcome = h.run();
    h.feed.pushAll(bytes, 4096);

    await h.commitEntered;
    await reader.reached(99);
    assert.equal(h.fill.readableLimit(200), 199);
    assert.equal(reader.received(), 99);

    h.releaseCommit();
    assert.equal(await outcome, 'committed');
    assert.deepEqual(await reader.ended, bytes.subarray(100, 200));
  });

  test('without a known size, a reader does not end before commit', async () => {
    const bytes = blob(3000);
    const h = await makeFill({ digest: digestOf(bytes), expectedSize: undefined, gateCommit: true });
    const reader = follow(readerOf(h.fill));
    let endedEarly = false;
    void reader.ended.then(() => (endedEarly = !h.commitReturned()));
    const outcome = h.run();
    h.feed.pushAll(bytes, 1000);
    await h.commitEntered;
    h.releaseCommit();
    assert.equal(await outcome, 'committed');
    assert.deepEqual(await reader.ended, bytes);
    assert.equal(endedEarly, false);
  });
});

describe('Fill: range readers', () => {
  const bytes = blob(600_000); // larger than one 256 KiB read

  const ranges: Array<[number, number | undefined]> = [
    [0, 1],
    [0, 10],
    [10, 20],
    [299_990, 300_010],
    [bytes.length - 5, bytes.length],
    [bytes.length - 1, undefined],
    [5, undefined],
    [0, undefined],
    [1000, 400_000],
  ];

  test('each reader gets exactly its slice, whether created before or during the fill', async () => {
    const h = await makeFill({ digest: digestOf(bytes), expectedSize: bytes.length });
    const early = ranges.map(([s, e]) => ({ s, e, r: follow(readerOf(h.fill, s, e)) }));
    const outcome = h.run();
    h.feed.push(bytes.subarray(0, 250_000));
    await until(h.fill, () => h.fill.written >= 250_000);
    const late = ranges.map(([s, e]) => ({ s, e, r: follow(readerOf(h.fill, s, e)) }));
    h.feed.push(bytes.subarray(250_000, 500_000));
    h.feed.push(bytes.subarray(500_000));
    h.feed.end();
    assert.equal(await outcome, 'committed');
    for (const { s, e, r } of [...early, ...late]) {
      assert.deepEqual(await r.ended, bytes.subarray(s, e), `range [${s}, ${e})`);
    }
  });

  test('an empty range ends with no bytes after commit', async () => {
    const small = blob(100);
    const h = await makeFill({ digest: digestOf(small), expectedSize: small.length });
    const r = follow(readerOf(h.fill, 50, 50));
    h.feed.pushAll(small, 30);
    assert.equal(await h.run(), 'committed');
    assert.equal((await r.ended).length, 0);
  });
});

describe('Fill: failures', () => {
  test('a digest mismatch fails the fill: no commit, temp file removed, readers error', async () => {
    const bytes = blob(10_000);
    const wrong = digestOf(Buffer.from('something else'));
    const h = await makeFill({ digest: wrong, expectedSize: bytes.length });
    const reader = follow(readerOf(h.fill));
    const ranged = follow(readerOf(h.fill, 0, 10));
    h.feed.pushAll(bytes, 3000);

    assert.equal(await h.run(), 'digest_mismatch');
    assert.equal(h.commits.length, 0);
    assert.equal(h.fill.state, 'failed');
    assert.ok(h.fill.error instanceof FillError);
    assert.equal(h.fill.error.outcome, 'digest_mismatch');
    assert.equal(await tempLeft(h), false, 'temp file must be removed');
    for (const r of [reader, ranged]) {
      await assert.rejects(r.ended, (err: unknown) => err instanceof FillError && err.outcome === 'digest_mismatch');
    }
    assert.ok(reader.received() < bytes.length, 'a reader never sees the whole unverified body');
  });

  test('more bytes than the expected size is a size mismatch, detected before the excess is written', async () => {
    const bytes = blob(1000);
    const h = await makeFill({ digest: digestOf(bytes), expectedSize: 999 });
    const reader = follow(readerOf(h.fill));
    h.feed.pushAll(bytes, 400);
    assert.equal(await h.run(), 'size_mismatch');
    assert.equal(h.commits.length, 0);
    assert.ok(h.fill.written <= 999);
    assert.equal(await tempLeft(h), false);
    await assert.rejects(reader.ended, (err: unknown) => err instanceof FillError && err.outcome === 'size_mismatch');
    assert.ok(reader.received() < 999);
  });

  test('fewer bytes than the expected size is a size mismatch', async () => {
    const bytes = blob(1000);
    const h = await makeFill({ digest: digestOf(bytes), expectedSize: 1001 });
    const reader = follow(readerOf(h.fill));
    h.feed.pushAll(bytes, 400);
    assert.equal(await h.run(), 'size_mismatch');
    assert.equal(h.commits.length, 0);
    assert.equal(await tempLeft(h), false);
    await assert.rejects(reader.ended, FillError);
  });

  test('an upstream error mid-body is upstream_error and readers error', async () => {
    const bytes = blob(1000);
    const h = await makeFill({ digest: digestOf(bytes), expectedSize: bytes.length });
    const reader = follow(readerOf(h.fill));
    const outcome = h.run();
    h.feed.push(bytes.subarray(0, 500));
    await reader.reached(500);
    h.feed.fail(Object.assign(new Error('socket hang up'), { code: 'UND_ERR_SOCKET' }));
    assert.equal(await outcome, 'upstream_error');
    assert.equal(h.commits.length, 0);
    assert.equal(await tempLeft(h), false);
    await assert.rejects(reader.ended, (err: unknown) => err instanceof FillError && err.outcome === 'upstream_error');
  });

  test('a body timeout is a timeout outcome', async () => {
    const bytes = blob(100);
    const h = await makeFill({ digest: digestOf(bytes), expectedSize: bytes.length });
    h.feed.push(bytes.subarray(0, 10));
    h.feed.fail(Object.assign(new Error('body timeout'), { code: 'UND_ERR_BODY_TIMEOUT' }));
    assert.equal(await h.run(), 'timeout');
    const h2 = await makeFill({ digest: digestOf(bytes), expectedSize: bytes.length });
    h2.feed.fail(new DOMException('The operation timed out.', 'TimeoutError'));
    assert.equal(await h2.run(), 'timeout');
  });

  test('a commit that throws fails the fill as write_error and readers error', async () => {
    const bytes = blob(1000);
    const h = await makeFill({ digest: digestOf(bytes), expectedSize: bytes.length, commitError: new Error('index full') });
    const reader = follow(readerOf(h.fill));
    h.feed.pushAll(bytes, 300);
    assert.equal(await h.run(), 'write_error');
    assert.equal(h.fill.state, 'failed');
    assert.equal(await tempLeft(h), false);
    await assert.rejects(reader.ended, (err: unknown) => err instanceof FillError && err.outcome === 'write_error');
  });

  test('a reader created after the fill failed errors instead of hanging', async () => {
    const bytes = blob(100);
    const h = await makeFill({ digest: digestOf(Buffer.from('nope')), expectedSize: bytes.length });
    const holder = follow(readerOf(h.fill)); // keeps the file handle open
    h.feed.pushAll(bytes, 50);
    assert.equal(await h.run(), 'digest_mismatch');
    await assert.rejects(holder.ended, FillError);
    const late = follow(readerOf(h.fill));
    await assert.rejects(late.ended, FillError);
  });
});

describe('Fill: readers are independent of the download', () => {
  test('a reader destroyed mid-way does not stop the fill or disturb other readers', async () => {
    const bytes = blob(300_000);
    const h = await makeFill({ digest: digestOf(bytes), expectedSize: bytes.length });
    const quitterStream = readerOf(h.fill);
    const quitter = follow(quitterStream);
    const stayer = follow(readerOf(h.fill));
    const outcome = h.run();
    h.feed.push(bytes.subarray(0, 100_000));
    await quitter.reached(1);
    const closed = new Promise((r) => quitterStream.once('close', r));
    quitterStream.destroy();
    await closed;
    h.feed.push(bytes.subarray(100_000));
    h.feed.end();
    assert.equal(await outcome, 'committed');
    assert.equal(h.commits.length, 1);
    assert.deepEqual(await stayer.ended, bytes);
    assert.ok(quitter.received() < bytes.length);
  });

  test('the fill completes when its only reader is destroyed before any data', async () => {
    const bytes = blob(1000);
    const h = await makeFill({ digest: digestOf(bytes), expectedSize: bytes.length });
    const r = readerOf(h.fill);
    r.destroy();
    h.feed.pushAll(bytes, 100);
    assert.equal(await h.run(), 'committed');
    assert.deepEqual(h.commits[0]?.contents, bytes);
  });

  test('20 concurrent readers, joining at different times, all get identical bytes', async () => {
    const bytes = blob(1_500_000);
    const h = await makeFill({ digest: digestOf(bytes), expectedSize: bytes.length });
    const readers = Array.from({ length: 10 }, () => follow(readerOf(h.fill)));
    const outcome = h.run();
    const step = 123_457; // not aligned with the 256 KiB read size
    for (let i = 0, n = 0; i < bytes.length; i += step, n++) {
      h.feed.push(bytes.subarray(i, i + step));
      if (n % 2 === 1 && readers.length < 20) {
        await until(h.fill, () => h.fill.written >= Math.min(i + step, bytes.length));
        readers.push(follow(readerOf(h.fill)), follow(readerOf(h.fill)));
      }
    }
    h.feed.end();
    assert.equal(await outcome, 'committed');
    assert.equal(readers.length, 20);
    const results = await Promise.all(readers.map((r) => r.ended));
    for (const got of results) assert.ok(got.equals(bytes));
  });

  test('a reader created after the fill has committed still receives the whole blob', async () => {
    const bytes = blob(2000);
    const h = await makeFill({ digest: digestOf(bytes), expectedSize: bytes.length });
    h.feed.pushAll(bytes, 500);
    assert.equal(await h.run(), 'committed');
    const late = follow(readerOf(h.fill));
    assert.deepEqual(await late.ended, bytes);
  });
});
