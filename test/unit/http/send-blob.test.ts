import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { createServer, request, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { BlobSender, sendBody } from '../../../src/http/send-blob.ts';
import type { ChunkSource } from '../../../src/store/chunk-source.ts';
import { createLogger } from '../../../src/observability/logger.ts';

/** A source over `data` that records every buffer it is handed; `failAt` makes it reject from that offset. */
class RecordingSource implements ChunkSource {
  readonly buffers = new Set<ArrayBufferLike>();
  reads = 0;
  closed = 0;
  readonly size: number;
  private pos = 0;
  private readonly data: Buffer;
  private readonly opts: { failAt?: number; shareEvery?: number; delayMs?: number };
  constructor(data: Buffer, opts: { failAt?: number; shareEvery?: number; delayMs?: number } = {}) {
    this.data = data;
    this.size = data.length;
    this.opts = opts;
  }

  async read(buf: Buffer): Promise<Buffer | null> {
    this.reads += 1;
    this.buffers.add(buf.buffer);
    if (this.opts.delayMs) await sleep(this.opts.delayMs);
    if (this.pos >= this.data.length) return null;
    if (this.opts.failAt !== undefined && this.pos >= this.opts.failAt) throw new Error('upstream sent bad bytes');
    const n = Math.min(buf.length, this.data.length - this.pos);
    const shared = this.opts.shareEvery !== undefined && this.reads % this.opts.shareEvery === 0;
    const chunk = shared ? this.data.subarray(this.pos, this.pos + n) : buf.subarray(0, this.data.copy(buf, 0, this.pos, this.pos + n));
    this.pos += n;
    return chunk;
  }

  close(): void {
    this.closed += 1;
  }
}

async function serve(source: ChunkSource, size: number): Promise<{ server: Server; url: URL; stats: { bytes: number } }> {
  const stats = { kind: undefined, result: undefined, bytes: 0 };
  const server = createServer((_req, res) => {
    sendBody(res, 200, { 'Content-Length': size }, source, stats, createLogger('silent'), { count: 3, bytes: 16 * 1024 });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { server, url: new URL(`http://127.0.0.1:${(server.address() as AddressInfo).port}/`), stats };
}

function get(url: URL): Promise<IncomingMessage> {
  return new Promise((resolve, reject) => request(url, resolve).on('error', reject).end());
}

async function readAll(res: IncomingMessage): Promise<{ body: Buffer; aborted: boolean }> {
  const parts: Buffer[] = [];
  try {
    for await (const chunk of res) parts.push(chunk as Buffer);
    return { body: Buffer.concat(parts), aborted: false };
  } catch {
    return { body: Buffer.concat(parts), aborted: true };
  }
}

describe('sendBody with a ChunkSource', () => {
  test('4 MiB through 3 recycled 16 KiB buffers arrives byte-identical', async () => {
    const data = randomBytes(4 * 1024 * 1024);
    const source = new RecordingSource(data, { shareEvery: 7 });
    const { server, url, stats } = await serve(source, data.length);
    try {
      const { body, aborted } = await readAll(await get(url));
      assert.equal(aborted, false);
      assert.ok(body.equals(data));
      assert.equal(stats.bytes, data.length);
      assert.ok(source.reads > 250, `${source.reads} reads`);
      assert.ok(source.buffers.size <= 3, `${source.buffers.size} distinct buffers for ${source.reads} reads`);
      await sleep(10);
      assert.equal(source.closed, 1);
    } finally {
      server.close();
    }
  });

  test('a source that fails mid-body aborts the response instead of ending it short', async () => {
    const data = randomBytes(1024 * 1024);
    const source = new RecordingSource(data, { failAt: 512 * 1024 });
    const { server, url } = await serve(source, data.length);
    try {
      const { body, aborted } = await readAll(await get(url));
      assert.equal(aborted, true);
      assert.ok(body.length < data.length);
      assert.equal(source.closed, 1);
    } finally {
      server.close();
    }
  });

  test('a client that leaves stops the reads and the source is closed', async () => {
    const data = randomBytes(64 * 1024 * 1024);
    const source = new RecordingSource(data, { delayMs: 1 });
    const { server, url } = await serve(source, data.length);
    try {
      const res = await get(url);
      await new Promise<void>((r) => res.once('data', () => r()));
      res.destroy();
      for (let i = 0; i < 200 && source.closed === 0; i++) await sleep(10);
      assert.equal(source.closed, 1);
      const reads = source.reads;
      await sleep(100);
      assert.equal(source.reads, reads, 'no reads after close');
      assert.ok(reads < 64 * 64, `stopped early: ${reads} of ${64 * 64} reads`);
    } finally {
      server.close();
    }
  });
});

describe('BlobSender: buffers by kind of body', () => {
  /** Serves `bodies` in order, one per request, through one BlobSender. */
  async function serveAll(bodies: Array<{ body: Buffer | RecordingSource; stored: boolean }>) {
    const sender = new BlobSender();
    let next = 0;
    const server = createServer((_req, res) => {
      const b = bodies[next++];
      if (!b) return void res.destroy();
      const size = Buffer.isBuffer(b.body) ? b.body.length : b.body.size;
      sender.send(res, 200, { 'Content-Length': size }, b, { kind: undefined, result: undefined, bytes: 0 }, createLogger('silent'));
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    return { server, url: new URL(`http://127.0.0.1:${(server.address() as AddressInfo).port}/`) };
  }

  const sizes = (s: RecordingSource): number[] => [...s.buffers].map((b) => b.byteLength);

  test('memory bodies go out whole; stored blobs get 1 MiB buffers while few stream; bytes still arriving get 64 KiB ones', async () => {
    const small = randomBytes(1000);
    const stored = new RecordingSource(randomBytes(1024 * 1024));
    const live = new RecordingSource(randomBytes(1024 * 1024));
    const { server, url } = await serveAll([{ body: small, stored: true }, { body: stored, stored: true }, { body: live, stored: false }]);
    try {
      assert.ok((await readAll(await get(url))).body.equals(small));
      await readAll(await get(url));
      await readAll(await get(url));
      assert.deepEqual([...new Set(sizes(stored))], [1024 * 1024]);
      assert.deepEqual([...new Set(sizes(live))], [64 * 1024]);
    } finally {
      server.close();
    }
  });

  test('with 8 stored blobs streaming, the next one gets 256 KiB buffers (fan-out), and the bytes are whole', async () => {
    // 32 MiB bodies that the first 8 clients never read: far more than the sockets buffer, so their streams stay open, waiting.
    const big = randomBytes(32 * 1024 * 1024);
    const held = Array.from({ length: 8 }, () => ({ body: new RecordingSource(big), stored: true }));
    const data = randomBytes(1024 * 1024);
    const fanned = new RecordingSource(data);
    const { server, url } = await serveAll([...held, { body: fanned, stored: true }]);
    const waiting: IncomingMessage[] = [];
    try {
      for (let i = 0; i < held.length; i++) waiting.push(await get(url));
      const { body } = await readAll(await get(url));
      assert.ok(body.equals(data));
      assert.deepEqual([...new Set(sizes(fanned))], [256 * 1024]);
      for (const h of held) assert.deepEqual([...new Set(sizes(h.body))], [1024 * 1024], 'the first 8 had 1 MiB buffers');
    } finally {
      for (const w of waiting) w.destroy();
      server.closeAllConnections();
      server.close();
    }
  });
});
