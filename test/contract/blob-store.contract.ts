// The behaviour every BlobStore implementation must have. Each implementation
// runs it from its own test file: runBlobStoreContract('FsBlobStore', ...).
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { digestOf, type Digest } from '../../src/oci/digest.ts';
import { BlobMismatchError, type BlobStore, type BlobWriter } from '../../src/store/blob-store-api.ts';
import { readFully, type ChunkSource } from '../../src/store/chunk-source.ts';

export type StoreFixture = { store: BlobStore; cleanup(): Promise<void> };

async function drain(source: ChunkSource): Promise<Buffer> {
  const buf = Buffer.allocUnsafe(7919); // not a power of two: chunk edges land anywhere
  const parts: Buffer[] = [];
  try {
    for (let c = await source.read(buf); c !== null; c = await source.read(buf)) parts.push(Buffer.from(c));
  } finally {
    source.close();
  }
  return Buffer.concat(parts);
}

async function listAll(store: BlobStore): Promise<string[]> {
  const out: string[] = [];
  for await (const name of store.list()) out.push(name);
  return out.sort();
}

async function put(store: BlobStore, bytes: Buffer, chunk = 10_000): Promise<Digest> {
  const digest = digestOf(bytes);
  const w = await store.createWriter(digest);
  try {
    for (let i = 0; i < bytes.length; i += chunk) await w.write([bytes.subarray(i, i + chunk)]);
    await w.commit(bytes.length);
  } finally {
    await w.close();
  }
  return digest;
}

export function runBlobStoreContract(name: string, makeStore: () => Promise<StoreFixture>): void {
  async function withStore(fn: (store: BlobStore) => Promise<void>): Promise<void> {
    const f = await makeStore();
    try {
      await f.store.init();
      await fn(f.store);
    } finally {
      await f.cleanup();
    }
  }

  describe(`BlobStore contract: ${name}`, () => {
    test('a blob that was never written is missing: stat and openRead say undefined, list is empty', () =>
      withStore(async (store) => {
        const d = digestOf(Buffer.from('nothing'));
        assert.equal(await store.stat(d), undefined);
        assert.equal(await store.openRead(d), undefined);
        assert.deepEqual(await listAll(store), []);
      }));

    test('a committed blob has its size and bytes, whole and by range', () =>
      withStore(async (store) => {
        const bytes = randomBytes(100_000);
        const d = await put(store, bytes);
        assert.deepEqual(await store.stat(d), { size: bytes.length });
        const whole = await store.openRead(d);
        assert.ok(whole);
        assert.equal(whole.size, bytes.length);
        assert.ok((await drain(whole.source)).equals(bytes));
        for (const [start, end] of [[0, 1], [1, 99_999], [50_000, 100_000], [12_345, 12_345]] as const) {
          const part = await store.openRead(d, { start, end });
          assert.ok(part);
          assert.equal(part.size, bytes.length, 'size is the whole blob\'s');
          assert.ok((await drain(part.source)).equals(bytes.subarray(start, end)), `${start}-${end}`);
        }
        assert.deepEqual(await listAll(store), [d]);
      }));

    test('commit with the wrong digest rejects and stores nothing', () =>
      withStore(async (store) => {
        const wrong = digestOf(Buffer.from('something else'));
        const w = await store.createWriter(wrong);
        await w.write([randomBytes(1000)]);
        await assert.rejects(w.commit(1000), (err: unknown) => err instanceof BlobMismatchError && err.kind === 'digest');
        await w.abort();
        await w.close();
        assert.equal(await store.stat(wrong), undefined);
        assert.deepEqual(await listAll(store), []);
      }));

    test('commit with the wrong size rejects and stores nothing', () =>
      withStore(async (store) => {
        const bytes = randomBytes(1000);
        const w = await store.createWriter(digestOf(bytes));
        await w.write([bytes]);
        await assert.rejects(w.commit(1001), (err: unknown) => err instanceof BlobMismatchError && err.kind === 'size');
        await w.abort();
        await w.close();
        assert.equal(await store.stat(digestOf(bytes)), undefined);
      }));

    test('commit without a size checks the digest alone', () =>
      withStore(async (store) => {
        const bytes = randomBytes(3000);
        const w = await store.createWriter(digestOf(bytes));
        await w.write([bytes.subarray(0, 1000), bytes.subarray(1000)]);
        await w.commit();
        await w.close();
        assert.deepEqual(await store.stat(digestOf(bytes)), { size: 3000 });
      }));

    test('abort leaves nothing behind, even after bytes were written', () =>
      withStore(async (store) => {
        const bytes = randomBytes(50_000);
        const w = await store.createWriter(digestOf(bytes));
        await w.write([bytes]);
        await w.abort();
        await w.abort(); // idempotent
        await w.close();
        assert.equal(await store.stat(digestOf(bytes)), undefined);
        assert.deepEqual(await listAll(store), []);
      }));

    test('bytes can be read back while the write goes on, and nothing is visible before commit', () =>
      withStore(async (store) => {
        const bytes = randomBytes(30_000);
        const d = digestOf(bytes);
        const w: BlobWriter = await store.createWriter(d);
        await w.write([bytes.subarray(0, 10_000)]);
        assert.equal(w.written, 10_000);
        const buf = Buffer.alloc(4000);
        assert.equal(await w.readAt(buf, 2000), 4000);
        assert.ok(buf.equals(bytes.subarray(2000, 6000)));
        assert.equal(await store.stat(d), undefined, 'not visible before commit');
        await w.write([bytes.subarray(10_000, 20_000), bytes.subarray(20_000)]);
        assert.equal(w.written, 30_000);
        assert.equal(await w.readAt(buf, 26_000), 4000);
        assert.ok(buf.equals(bytes.subarray(26_000, 30_000)));
        await w.commit(30_000);
        // Readers tailing the write may still be reading after the commit.
        assert.equal(await w.readAt(buf, 0), 4000);
        assert.ok(buf.equals(bytes.subarray(0, 4000)));
        await w.close();
        const opened = await store.openRead(d);
        assert.ok(opened);
        assert.ok((await readFully(opened.source, opened.size)).equals(bytes));
      }));

    test('remove deletes a blob; removing a missing one is no error', () =>
      withStore(async (store) => {
        const a = await put(store, randomBytes(1000));
        const b = await put(store, randomBytes(2000));
        assert.deepEqual(await listAll(store), [a, b].sort());
        await store.remove(a);
        await store.remove(a);
        assert.equal(await store.stat(a), undefined);
        assert.deepEqual(await listAll(store), [b]);
      }));

    test('concurrent writers of one digest: both commit, one blob with the right bytes', () =>
      withStore(async (store) => {
        const bytes = randomBytes(200_000);
        const d = digestOf(bytes);
        const [w1, w2] = await Promise.all([store.createWriter(d), store.createWriter(d)]);
        for (let i = 0; i < bytes.length; i += 50_000) {
          await Promise.all([w1.write([bytes.subarray(i, i + 50_000)]), w2.write([bytes.subarray(i, i + 50_000)])]);
        }
        await Promise.all([w1.commit(bytes.length), w2.commit(bytes.length)]);
        await Promise.all([w1.close(), w2.close()]);
        assert.deepEqual(await listAll(store), [d]);
        const opened = await store.openRead(d);
        assert.ok(opened);
        assert.ok((await readFully(opened.source, opened.size)).equals(bytes));
      }));

    test('an empty blob commits and reads back empty', () =>
      withStore(async (store) => {
        const d = await put(store, Buffer.alloc(0));
        assert.deepEqual(await store.stat(d), { size: 0 });
        const opened = await store.openRead(d);
        assert.ok(opened);
        assert.equal((await drain(opened.source)).length, 0);
      }));
  });
}
