// The classifier against real errors, produced by real sockets, files and
// streams wherever they can be, so a change in how Node or undici report
// them shows up here.
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, open, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import { createServer as createTcpServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { PassThrough, Writable } from 'node:stream';
import { finished } from 'node:stream/promises';
import { Agent, request } from 'undici';
import { classifyIoError, isResumable, isTimeout } from '../../../src/io/io-error.ts';

async function rejection(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (err) {
    return err;
  }
  throw new Error('expected a rejection');
}

async function listen(server: Server | ReturnType<typeof createTcpServer>): Promise<number> {
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return (server.address() as AddressInfo).port;
}

async function freePort(): Promise<number> {
  const s = createTcpServer();
  const port = await listen(s);
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

describe('classifyIoError: network', () => {
  test('a refused connection is refused', async () => {
    const err = await rejection(request(`http://127.0.0.1:${await freePort()}/`));
    assert.equal(classifyIoError(err), 'refused');
  });

  test('a socket reset before the answer is cut', async () => {
    const server = createTcpServer((sock) => sock.resetAndDestroy());
    const port = await listen(server);
    try {
      const err = await rejection(request(`http://127.0.0.1:${port}/`));
      assert.equal(classifyIoError(err), 'cut');
    } finally {
      server.close();
    }
  });

  test('a body cut mid-way is cut, and resumable', async () => {
    const server = createServer((_req, res) => {
      res.writeHead(200, { 'content-length': 1000 });
      res.write(Buffer.alloc(100));
      setTimeout(() => res.destroy(), 20);
    });
    const port = await listen(server);
    try {
      const res = await request(`http://127.0.0.1:${port}/`);
      const err = await rejection(res.body.arrayBuffer());
      assert.equal(classifyIoError(err), 'cut');
      assert.equal(isResumable(classifyIoError(err)), true);
    } finally {
      server.closeAllConnections();
      server.close();
    }
  });

  test('headers that never come are a timeout; a body that stops is stalled (both timeouts, only the stall resumable)', async () => {
    const server = createServer((req, res) => {
      if (req.url === '/stall') {
        res.writeHead(200, { 'content-length': 1000 });
        res.write(Buffer.alloc(10));
      }
      // else: never answer
    });
    const port = await listen(server);
    const dispatcher = new Agent({ headersTimeout: 100, bodyTimeout: 100 });
    try {
      const headersErr = await rejection(request(`http://127.0.0.1:${port}/hang`, { dispatcher }));
      assert.equal(classifyIoError(headersErr), 'timeout');
      const res = await request(`http://127.0.0.1:${port}/stall`, { dispatcher });
      const bodyErr = await rejection(res.body.arrayBuffer());
      assert.equal(classifyIoError(bodyErr), 'stalled');
      assert.ok(isTimeout('timeout') && isTimeout('stalled'));
      assert.equal(isResumable('timeout'), false);
      assert.equal(isResumable('stalled'), true);
    } finally {
      await dispatcher.destroy();
      server.closeAllConnections();
      server.close();
    }
  });

  test('our own abort is aborted; our own deadline (AbortSignal.timeout) is a timeout; neither is resumable', async () => {
    const server = createServer(() => undefined);
    const port = await listen(server);
    try {
      const aborted = await rejection(request(`http://127.0.0.1:${port}/`, { signal: AbortSignal.abort() }));
      assert.equal(classifyIoError(aborted), 'aborted');
      const timedOut = await rejection(request(`http://127.0.0.1:${port}/`, { signal: AbortSignal.timeout(50) }));
      assert.equal(classifyIoError(timedOut), 'timeout');
      assert.equal(isResumable(classifyIoError(aborted)), false);
      assert.equal(isResumable(classifyIoError(timedOut)), false);
    } finally {
      server.closeAllConnections();
      server.close();
    }
  });
});

describe('classifyIoError: disk', () => {
  test('ENOENT, ENOTDIR, EISDIR and EEXIST from the filesystem are disk errors', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'gantry-io-error-'));
    try {
      const file = path.join(dir, 'file');
      await writeFile(file, 'x');
      const cases = [
        await rejection(open(path.join(dir, 'missing', 'x'), 'r')), // ENOENT
        await rejection(open(path.join(file, 'below-a-file'), 'wx')), // ENOTDIR
        await rejection(open(dir, 'w')), // EISDIR
        await rejection(open(file, 'wx')), // EEXIST
      ];
      assert.deepEqual(cases.map((e) => (e as NodeJS.ErrnoException).code), ['ENOENT', 'ENOTDIR', 'EISDIR', 'EEXIST']);
      for (const e of cases) assert.equal(classifyIoError(e), 'disk');
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  test('codes that can only be shown by name: ENOSPC, EIO, EMFILE, EACCES, EROFS', () => {
    for (const code of ['ENOSPC', 'EIO', 'EMFILE', 'EACCES', 'EROFS']) {
      assert.equal(classifyIoError(Object.assign(new Error(code), { code, syscall: 'write' })), 'disk', code);
    }
  });
});

describe('classifyIoError: streams and the rest', () => {
  test('a stream closed early is cut; writing to a destroyed stream is client_gone', async () => {
    const s = new PassThrough();
    const done = finished(s);
    s.destroy();
    assert.equal(classifyIoError(await rejection(done)), 'cut');
    const w = new Writable({ write: (_c, _e, cb) => cb() });
    w.destroy();
    const err = await new Promise<unknown>((resolve) => w.write('x', resolve));
    assert.equal(classifyIoError(err), 'client_gone');
  });

  test('the cause\'s code counts when the error itself has none (fetch-style wrapping)', () => {
    assert.equal(classifyIoError(new TypeError('terminated', { cause: Object.assign(new Error('x'), { code: 'UND_ERR_SOCKET' }) })), 'cut');
  });

  test('message text alone means nothing: unknown, as are non-errors', () => {
    for (const e of [new Error('terminated'), new Error('other side closed'), undefined, null, 'ECONNRESET', 42]) {
      assert.equal(classifyIoError(e), 'unknown');
    }
  });
});
