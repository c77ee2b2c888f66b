import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { fstatSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { FileSource, openFd, toReadable } from '../../../src/store/chunk-source.ts';
import { waitFor } from '../../helpers/wait-for.ts';

async function drain(source: FileSource, bufBytes: number): Promise<{ bytes: Buffer; backings: Set<ArrayBufferLike> }> {
  const buf = Buffer.allocUnsafeSlow(bufBytes);
  const parts: Buffer[] = [];
  const backings = new Set<ArrayBufferLike>();
  for (;;) {
    const chunk = await source.read(buf);
    if (chunk === null) break;
    backings.add(chunk.buffer);
    parts.push(Buffer.from(chunk)); // copy: buf is reused by the next read
  }
  source.close();
  return { bytes: Buffer.concat(parts), backings };
}

describe('FileSource', () => {
  let dir: string;
  let file: string;
  const data = randomBytes(300_000);
  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'gantry-chunk-source-'));
    file = path.join(dir, 'blob');
    await writeFile(file, data);
  });
  after(() => rm(dir, { recursive: true, force: true }));

  test('reads exactly [start, end) of an open file into the caller\'s buffer', async () => {
    const fd = await openFd(file);
    const { bytes, backings } = await drain(new FileSource(fd, 1000, 250_001), 64 * 1024);
    assert.ok(bytes.equals(data.subarray(1000, 250_001)));
    assert.equal(backings.size, 1, 'every chunk lands in the one buffer it was given');
  });

  test('opens a path lazily and reads the whole range', async () => {
    const { bytes } = await drain(new FileSource(file, 0, data.length), 4096);
    assert.ok(bytes.equals(data));
  });

  test('an empty range ends at once', async () => {
    const { bytes } = await drain(new FileSource(file, 10, 10), 4096);
    assert.equal(bytes.length, 0);
  });

  test('a file shorter than the range rejects instead of ending early', async () => {
    const source = new FileSource(file, data.length - 10, data.length + 10);
    const buf = Buffer.alloc(64);
    assert.equal((await source.read(buf))?.length, 10);
    await assert.rejects(source.read(buf), /ended at 300000 of 300010/);
    source.close();
    source.close(); // idempotent
  });

  test('toReadable streams the same bytes and closes the source', async () => {
    const fd = await openFd(file);
    const parts: Buffer[] = [];
    for await (const chunk of toReadable(new FileSource(fd, 5, 200_000), 8192)) parts.push(chunk as Buffer);
    assert.ok(Buffer.concat(parts).equals(data.subarray(5, 200_000)));
    // The descriptor was closed by the source: it is no longer open.
    await waitFor('the descriptor to be closed', () => { try { fstatSync(fd); return false; } catch (err) { return (err as NodeJS.ErrnoException).code === 'EBADF'; } });
  });
});
