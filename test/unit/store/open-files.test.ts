import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { fstatSync, readSync } from 'node:fs';
import { mkdtemp, rm, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { OpenFiles } from '../../../src/store/open-files.ts';
import { waitFor } from '../../helpers/wait-for.ts';

function isOpen(fd: number): boolean {
  try {
    fstatSync(fd);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EBADF') return false;
    throw err;
  }
}

/** fs.close completes on the thread pool: wait (briefly) for it. */
async function closed(fd: number): Promise<void> {
  await waitFor(`descriptor ${fd} to be closed`, () => !isOpen(fd), { timeoutMs: 2000 });
}

function firstByte(fd: number): string {
  const b = Buffer.alloc(1);
  readSync(fd, b, 0, 1, 0);
  return b.toString();
}

describe('OpenFiles', () => {
  let dir: string;
  const file = (name: string): string => path.join(dir, name);
  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'gantry-open-files-'));
    for (const n of ['a', 'b', 'c']) await writeFile(file(n), `${n}-content`);
  });
  after(() => rm(dir, { recursive: true, force: true }));

  test('a file is opened once: later and concurrent loans share its descriptor and size', async () => {
    const files = new OpenFiles(8);
    const [x, y] = await Promise.all([files.lend('a', file('a')), files.lend('a', file('a'))]);
    const z = await files.lend('a', file('a'));
    assert.ok(x && y && z);
    assert.equal(x.fd, y.fd);
    assert.equal(x.fd, z.fd);
    assert.equal(x.size, 'a-content'.length);
    for (const l of [x, y, z]) l.release();
    assert.ok(isOpen(x.fd), 'kept open for the next request');
    files.clear();
    await closed(x.fd);
  });

  test('a missing file is undefined, and is not remembered as missing', async () => {
    const files = new OpenFiles(8);
    assert.equal(await files.lend('late', file('late')), undefined);
    await writeFile(file('late'), 'now here');
    const l = await files.lend('late', file('late'));
    assert.equal(l?.size, 'now here'.length);
    l?.release();
    files.clear();
  });

  test('forget (the file was removed): a reader keeps its descriptor until it releases it; the next loan opens the path again', async () => {
    const files = new OpenFiles(8);
    const reading = await files.lend('b', file('b'));
    assert.ok(reading);
    files.forget('b');
    await unlink(file('b'));
    assert.equal(firstByte(reading.fd), 'b', 'still readable by the reader that has it');
    assert.equal(await files.lend('b', file('b')), undefined, 'gone for the next request');
    reading.release();
    await closed(reading.fd);
  });

  test('past `max` files the least recently used descriptor is closed, once its readers are done', async () => {
    const files = new OpenFiles(1);
    const a = await files.lend('a', file('a'));
    assert.ok(a);
    const c = await files.lend('c', file('c'));
    assert.ok(c);
    assert.ok(isOpen(a.fd), 'pushed out while read: stays open');
    a.release();
    await closed(a.fd);
    c.release();
    assert.ok(isOpen(c.fd));
    files.clear();
    await closed(c.fd);
  });
});
