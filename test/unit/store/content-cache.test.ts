// ContentCache.ingest: the one way content enters the cache, over a real store and index.
import { test, describe, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { digestOf } from '../../../src/oci/digest.ts';
import { BlobMismatchError } from '../../../src/store/blob-store-api.ts';
import { type IngestMeta } from '../../../src/store/content-cache.ts';
import { readBody, tempCache, type TempCache } from '../support.ts';

const meta: IngestMeta = { kind: 'blob', mediaType: 'application/octet-stream', upstream: 'registry.test', repo: 'team/app', restricted: false };

let tc: TempCache;
afterEach(() => tc.close());

describe('ContentCache.ingest', () => {
  test('a verified commit stores and indexes together; the object then opens, whole and by range', async () => {
    tc = await tempCache();
    const bytes = randomBytes(5000);
    const d = digestOf(bytes);
    const w = await tc.cache.ingest(d, meta);
    await w.write([bytes.subarray(0, 2000), bytes.subarray(2000)]);
    assert.equal(tc.cache.peek(d), undefined, 'not indexed before commit');
    await w.commit(bytes.length);
    await w.close();
    const entry = tc.cache.peek(d);
    assert.equal(entry?.size, 5000);
    assert.equal(entry?.kind, 'blob');
    assert.equal(entry?.repo, 'team/app');
    const opened = await tc.cache.open(d, { start: 10, end: 20 });
    assert.ok(opened);
    assert.ok((await readBody(opened.source)).equals(bytes.subarray(10, 20)));
    assert.ok((await tc.cache.readWhole(d))?.bytes.equals(bytes));
  });

  test('a commit that does not verify indexes nothing and leaves no file', async () => {
    tc = await tempCache();
    const d = digestOf(Buffer.from('expected'));
    const w = await tc.cache.ingest(d, meta);
    await w.write([Buffer.from('something else')]);
    await assert.rejects(w.commit(), BlobMismatchError);
    await w.abort();
    await w.close();
    assert.equal(tc.cache.peek(d), undefined);
    assert.deepEqual(await readdir(path.join(tc.dir, 'tmp')), []);
    assert.equal(await tc.store.stat(d), undefined);
  });

  test('ingestBytes stores a small object once; a wrong digest throws and caches nothing', async () => {
    tc = await tempCache();
    const bytes = Buffer.from('{"schemaVersion":2}');
    const d = digestOf(bytes);
    await tc.cache.ingestBytes(d, bytes, { ...meta, kind: 'manifest', mediaType: 'application/json' });
    await tc.cache.ingestBytes(d, bytes, { ...meta, kind: 'manifest', mediaType: 'application/json' }); // already there: no-op
    assert.equal(tc.cache.peek(d)?.kind, 'manifest');
    assert.equal(tc.cache.entries, 1);
    const other = digestOf(Buffer.from('other'));
    await assert.rejects(tc.cache.ingestBytes(other, bytes, meta), BlobMismatchError);
    assert.equal(tc.cache.peek(other), undefined);
  });
});
