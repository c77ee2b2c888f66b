import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { digestOf } from '../../../src/oci/digest.ts';
import { FsBlobStore } from '../../../src/store/blob-store.ts';
import { runBlobStoreContract } from '../../contract/blob-store.contract.ts';

async function fixture(opts: { tempName?: () => string } = {}) {
  const dir = await mkdtemp(path.join(tmpdir(), 'gantry-fs-store-'));
  return { dir, store: new FsBlobStore(dir, opts), cleanup: () => rm(dir, { recursive: true, force: true }) };
}

runBlobStoreContract('FsBlobStore', fixture);

describe('FsBlobStore on disk', () => {
  test('blobs live at blobs/<alg>/<2 hex>/<hex>; an aborted write leaves tmp/ empty', async () => {
    const f = await fixture();
    try {
      await f.store.init();
      const bytes = randomBytes(1000);
      const d = digestOf(bytes);
      const w = await f.store.createWriter(d);
      await w.write([bytes]);
      assert.equal((await readdir(path.join(f.dir, 'tmp'))).length, 1, 'written to a temp file first');
      await w.commit(bytes.length);
      await w.close();
      const hex = d.slice('sha256:'.length);
      assert.deepEqual(await readdir(path.join(f.dir, 'blobs', 'sha256', hex.slice(0, 2))), [hex]);
      assert.deepEqual(await readdir(path.join(f.dir, 'tmp')), []);
      const w2 = await f.store.createWriter(digestOf(Buffer.from('x')));
      await w2.write([Buffer.from('x')]);
      await w2.abort();
      await w2.close();
      assert.deepEqual(await readdir(path.join(f.dir, 'tmp')), []);
    } finally {
      await f.cleanup();
    }
  });

  test('a writer never reuses an existing temp file', async () => {
    const f = await fixture({ tempName: () => 'fixed' });
    try {
      await f.store.init();
      await writeFile(path.join(f.dir, 'tmp', 'fixed'), 'x');
      await assert.rejects(f.store.createWriter(digestOf(Buffer.alloc(0))), (err: NodeJS.ErrnoException) => err.code === 'EEXIST');
    } finally {
      await f.cleanup();
    }
  });

  test('init removes temp files left by a crash (never verified)', async () => {
    const f = await fixture();
    try {
      await f.store.init();
      await writeFile(path.join(f.dir, 'tmp', 'leftover'), 'partial');
      await f.store.init();
      assert.deepEqual(await readdir(path.join(f.dir, 'tmp')), []);
    } finally {
      await f.cleanup();
    }
  });

  test('creating a writer fails when tmp/ is not a directory', async () => {
    const f = await fixture();
    try {
      await f.store.init();
      await rm(path.join(f.dir, 'tmp'), { recursive: true });
      await writeFile(path.join(f.dir, 'tmp'), 'not a directory');
      await assert.rejects(f.store.createWriter(digestOf(Buffer.alloc(0))), (err: NodeJS.ErrnoException) => err.code === 'ENOTDIR');
    } finally {
      await f.cleanup();
    }
  });
});
