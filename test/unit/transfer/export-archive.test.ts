import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Readable, Writable } from 'node:stream';
import { extract } from 'tar-stream';
import { buildImage } from '../../fixtures/images.ts';
import { archiveBytes, writeArchive, type BlobOpener } from '../../../src/transfer/export-archive.ts';
import { ExportError, planExport } from '../../../src/transfer/export-plan.ts';
import type { Digest } from '../../../src/oci/digest.ts';

const img = buildImage({ format: 'docker', seed: 'archive-unit' });
const plan = (): ReturnType<typeof planExport> =>
  planExport([{ name: 'docker.io/fx/a:1', digest: img.manifestDigest as Digest, bytes: img.manifest }], [], (d) => Promise.resolve(d === (img.manifestDigest as Digest) ? img.manifest : undefined));
const opener: BlobOpener = (d) => {
  const b = img.blobs.find((x) => x.digest === d);
  return Promise.resolve(b ? { body: Readable.from([b.bytes.subarray(0, 7), b.bytes.subarray(7)]), size: b.bytes.length } : undefined);
};

function collect(): { out: Writable; bytes: () => Buffer } {
  const chunks: Buffer[] = [];
  return { out: new Writable({ write(c: Buffer, _e, cb) { chunks.push(c); cb(); } }), bytes: () => Buffer.concat(chunks) };
}

async function entries(tar: Buffer): Promise<Map<string, { size: number; bytes: Buffer; type: string }>> {
  const out = new Map<string, { size: number; bytes: Buffer; type: string }>();
  const ex = extract();
  ex.on('entry', (h, stream, next) => {
    const chunks: Buffer[] = [];
    stream.on('data', (c: unknown) => chunks.push(c as Buffer));
    stream.on('end', () => { out.set(h.name, { size: h.size ?? -1, bytes: Buffer.concat(chunks), type: h.type ?? '' }); next(); });
  });
  await new Promise<void>((resolve, reject) => { ex.on('finish', resolve); ex.on('error', reject); ex.end(tar); });
  return out;
}

test('the tar has oci-layout, index.json, manifest.json, the blob directories and every blob with its size in the header', async () => {
  const { out, bytes } = collect();
  let counted = 0;
  await writeArchive(await plan(), opener, out, (n) => (counted += n));
  const got = await entries(bytes());
  assert.deepEqual([...got.keys()].slice(0, 5), ['oci-layout', 'index.json', 'manifest.json', 'blobs/', 'blobs/sha256/']);
  for (const b of [{ digest: img.manifestDigest, bytes: img.manifest }, ...img.blobs]) {
    const e = got.get(`blobs/sha256/${b.digest.slice(7)}`);
    assert.ok(e, b.digest);
    assert.equal(e.size, b.bytes.length);
    assert.ok(e.bytes.equals(b.bytes));
  }
  assert.equal(counted, img.manifest.length + img.blobs.reduce((n, b) => n + b.bytes.length, 0), 'progress counts every blob byte');
  assert.equal(bytes().length, archiveBytes(await plan()), 'archiveBytes is the size of the file written');
});

test('a blob gone from the store, or of another size, rejects with an ExportError naming it', async () => {
  const missing: BlobOpener = () => Promise.resolve(undefined);
  await assert.rejects(writeArchive(await plan(), missing, collect().out), (e: unknown) => e instanceof ExportError && e.message.includes(img.blobs[0]?.digest ?? '?'));
  const short: BlobOpener = async (d) => { const o = await opener(d); return o && { body: o.body, size: o.size - 1 }; };
  await assert.rejects(writeArchive(await plan(), short, collect().out), (e: unknown) => e instanceof ExportError && /bytes in the cache/.test(e.message));
});

test('an output that fails rejects instead of hanging', async () => {
  const failing = new Writable({ write(_c, _e, cb) { cb(new Error('ENOSPC: no space left on device')); } });
  await assert.rejects(writeArchive(await plan(), opener, failing), /ENOSPC/);
});
