import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, request, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import type { AccelPlan } from '../../../src/http/accel.ts';
import { FileResponder, type Sent } from '../../../src/serving/file-responder.ts';

type Outcome = { outcome: 'sent' | 'gone'; sent?: Sent };

/** A server whose every request is answered by `responder` from `plan`; resolves each request's outcome through `seen`. */
async function serve(responder: FileResponder, plan: () => AccelPlan, seen: Outcome[]): Promise<{ url: string; close(): Promise<void> }> {
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const entry: Outcome = { outcome: 'sent' };
    seen.push(entry);
    void responder.send(req, res, plan(), { 'Content-Type': 'application/octet-stream', 'X-Request-Id': 'r1' }, (s) => (entry.sent = s)).then((o) => {
      entry.outcome = o;
      if (o === 'gone') res.writeHead(404).end();
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, close: () => new Promise((r) => server.close(() => r())) };
}

function fetchRaw(url: string, method = 'GET', headers: Record<string, string> = {}): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: Buffer }> {
  return new Promise((resolve, reject) => {
    request(url, { method, headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
    })
      .on('error', reject)
      .end();
  });
}

describe('FileResponder', () => {
  test('sends the whole file, a range, a HEAD and a 416 with the OCI error body; reports what it sent', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'gantry-responder-'));
    const bytes = randomBytes(1024 * 1024 + 1);
    const file = join(dir, 'blob');
    await writeFile(file, bytes);
    const seen: Outcome[] = [];
    const responder = new FileResponder();
    const plan = (): AccelPlan => ({ file, size: bytes.length, digest: 'sha256:x', headers: {}, expiresAt: Infinity });
    const srv = await serve(responder, plan, seen);
    try {
      // Concurrent whole bodies, more than the big-buffer budget would give each: every byte right.
      const all = await Promise.all(Array.from({ length: 40 }, () => fetchRaw(srv.url)));
      for (const r of all) {
        assert.equal(r.status, 200);
        assert.equal(r.headers['content-length'], String(bytes.length));
        assert.ok(r.body.equals(bytes));
      }
      const part = await fetchRaw(srv.url, 'GET', { range: 'bytes=1048570-' });
      assert.equal(part.status, 206);
      assert.equal(part.headers['content-range'], `bytes 1048570-1048576/${bytes.length}`);
      assert.ok(part.body.equals(bytes.subarray(1048570)));
      const head = await fetchRaw(srv.url, 'HEAD');
      assert.equal(head.status, 200);
      assert.equal(head.headers['content-length'], String(bytes.length));
      const bad = await fetchRaw(srv.url, 'GET', { range: `bytes=${bytes.length + 5}-` });
      assert.equal(bad.status, 416);
      assert.equal(bad.headers['x-cache'], 'HIT');
      assert.equal((JSON.parse(bad.body.toString()) as { errors: Array<{ code: string }> }).errors[0]?.code, 'RANGE_INVALID');
      await new Promise((r) => setTimeout(r, 50));
      assert.equal(seen.filter((s) => s.sent?.status === 200 && s.sent.bytes === bytes.length).length, 40);
      assert.ok(seen.some((s) => s.sent?.status === 206 && s.sent.bytes === 7));
    } finally {
      await srv.close();
      await rm(dir, { recursive: true, force: true });
    }
  });

  test('a missing file, or one whose size disagrees with the plan, is "gone": nothing is written', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'gantry-responder-'));
    const file = join(dir, 'blob');
    await writeFile(file, 'twelve bytes');
    const seen: Outcome[] = [];
    let size = 99;
    let path = file;
    const srv = await serve(new FileResponder(), () => ({ file: path, size, digest: 'sha256:x', headers: {}, expiresAt: Infinity }), seen);
    try {
      assert.equal((await fetchRaw(srv.url)).status, 404, 'wrong size: gone, and the caller answered');
      assert.equal(seen.at(-1)?.outcome, 'gone');
      path = join(dir, 'nothing-here');
      size = 12;
      assert.equal((await fetchRaw(srv.url)).status, 404, 'missing: gone');
      assert.equal(seen.at(-1)?.outcome, 'gone');
      path = file;
      const ok = await fetchRaw(srv.url);
      assert.equal(ok.status, 200);
      assert.equal(ok.body.toString(), 'twelve bytes');
    } finally {
      await srv.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});
