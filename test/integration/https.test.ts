// HTTPS on Gantry's own port (issue 15): a CA made with openssl, the real Distribution registry as
// the upstream behind a counting forwarder, and the certificate replaced on disk while serving.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { copyFile, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, type PeerCertificate } from 'node:tls';
import { Agent, request } from 'undici';
import { parseConfig } from '../../src/config/config.ts';
import { startGantry, StartupError } from '../../src/gantry.ts';
import { pushBlob, randomBlob } from '../fixtures/images.ts';
import { startCountingForwarder, type CountingForwarder } from '../helpers/counting-forwarder.ts';
import { startMirror, type Mirror } from '../helpers/mirror.ts';
import { issue, makeCa, type TestCa } from '../helpers/test-ca.ts';
import { startUpstreamRegistry, type UpstreamRegistry } from '../helpers/upstream-registry.ts';
import { waitFor } from '../helpers/wait-for.ts';

let tmp: string;
let ca: TestCa;
let origin: UpstreamRegistry;
let fwd: CountingForwarder;
let trusting: Agent;
const blob = randomBlob(3 * 1024 * 1024, 'https-blob');

before(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'gantry-https-'));
  ca = await makeCa(join(tmp, 'ca'));
  origin = await startUpstreamRegistry({ storage: 'filesystem' });
  await pushBlob(origin.url, 'team/app', blob);
  fwd = await startCountingForwarder({ target: origin.url });
  trusting = new Agent({ connect: { ca: await readFile(ca.certFile) } });
});

after(async () => {
  await trusting?.close();
  await fwd?.stop();
  await origin?.stop();
  if (tmp) await rm(tmp, { recursive: true, force: true });
});

/** A certificate pair in its own directory, the files Gantry is configured with. */
async function certFiles(name: string): Promise<{ certFile: string; keyFile: string; serial: string }> {
  const leaf = await issue(ca, name, ['IP:127.0.0.1', 'DNS:gantry.test']);
  const certFile = join(tmp, `${name}-tls.crt`);
  const keyFile = join(tmp, `${name}-tls.key`);
  await copyFile(leaf.certFile, certFile);
  await copyFile(leaf.keyFile, keyFile);
  return { certFile, keyFile, serial: leaf.serial };
}

async function startTls(name: string, workers: number): Promise<{ node: Mirror; files: { certFile: string; keyFile: string; serial: string } }> {
  const files = await certFiles(name);
  const node = await startMirror({ upstreams: [{ host: 'docker.io', url: fwd.url }], workers, tls: { certFile: files.certFile, keyFile: files.keyFile } });
  return { node, files };
}

/** The serial number of the certificate a new TLS connection to `port` is given. */
function servedSerial(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port, rejectUnauthorized: false }, () => {
      const cert: PeerCertificate = socket.getPeerCertificate();
      socket.end();
      resolve(cert.serialNumber.toUpperCase());
    });
    socket.once('error', reject);
    socket.setTimeout(5_000, () => socket.destroy(new Error('TLS handshake timed out')));
  });
}

async function getBlob(url: string, dispatcher: Agent): Promise<{ status: number; digest: string; cache: string }> {
  const res = await request(`${url}/v2/team/app/blobs/${blob.digest}`, { dispatcher, headersTimeout: 30_000, bodyTimeout: 30_000 });
  const h = createHash('sha256');
  for await (const chunk of res.body as AsyncIterable<Buffer>) h.update(chunk);
  return { status: res.statusCode, digest: `sha256:${h.digest('hex')}`, cache: String(res.headers['x-cache'] ?? '') };
}

for (const workers of [0, 2]) {
  describe(`HTTPS with ${workers === 0 ? 'the main process alone' : `${workers} serving processes`}`, () => {
    test('pulls over TLS with the CA; the blob is fetched upstream once; a client without the CA is refused at the handshake', async () => {
      const { node } = await startTls(`w${workers}`, workers);
      try {
        assert.match(node.url, /^https:\/\/127\.0\.0\.1:\d+$/);
        const before = fwd.count({ method: 'GET', pathIncludes: blob.digest });
        const first = await getBlob(node.url, trusting);
        assert.deepEqual([first.status, first.digest], [200, blob.digest]);
        const second = await getBlob(node.url, trusting);
        assert.deepEqual([second.status, second.digest, second.cache], [200, blob.digest, 'HIT']);
        assert.equal(fwd.count({ method: 'GET', pathIncludes: blob.digest }) - before, 1, 'one upstream GET of the blob for this node');
        await assert.rejects(request(`${node.url}/v2/`), (err: Error & { code?: string; cause?: { code?: string } }) => /SELF_SIGNED|UNABLE_TO_VERIFY|unable to verify|self-signed/i.test(`${err.code} ${err.cause?.code} ${err.message}`));
      } finally {
        await node.destroy();
      }
    });

    test('a certificate replaced on disk is served to new connections within seconds, with no restart; a connection made before keeps working', async () => {
      const { node, files } = await startTls(`rot${workers}`, workers);
      const keepAlive = new Agent({ connect: { ca: await readFile(ca.certFile) }, keepAliveTimeout: 60_000 });
      try {
        const port = Number(new URL(node.url).port);
        assert.equal(await servedSerial(port), files.serial);
        assert.equal((await getBlob(node.url, keepAlive)).status, 200);
        const renewed = await issue(ca, `rot${workers}-renewed`, ['IP:127.0.0.1'], files);
        assert.notEqual(renewed.serial, files.serial);
        // Every serving process answers with the new one: several connections in a row.
        await waitFor('the renewed certificate served', async () => {
          const seen = await Promise.all([1, 2, 3, 4].map(() => servedSerial(port)));
          return seen.every((s) => s === renewed.serial);
        }, { timeoutMs: 10_000, intervalMs: 200 });
        const again = await getBlob(node.url, keepAlive);
        assert.deepEqual([again.status, again.digest], [200, blob.digest]);
      } finally {
        await keepAlive.close();
        await node.destroy();
      }
    });
  });
}

describe('HTTPS configuration errors', () => {
  test('a certificate without its key is a configuration error naming both settings', () => {
    assert.throws(() => parseConfig({ tls: { certFile: '/x.crt' } }), /tls\.keyFile: required with tls\.certFile/);
  });

  test('a key that does not match, or a file that is not there, stops the start with one line naming the file', async () => {
    const a = await certFiles('mismatch-a');
    const b = await certFiles('mismatch-b');
    const dir = await mkdtemp(join(tmpdir(), 'gantry-https-bad-'));
    try {
      for (const [tls, pattern] of [
        [{ certFile: a.certFile, keyFile: b.keyFile }, /tls\.certFile .*mismatch-a-tls\.crt \/ tls\.keyFile .*mismatch-b-tls\.key: not a PEM certificate and its private key/],
        [{ certFile: join(dir, 'absent.crt'), keyFile: a.keyFile }, /tls\.certFile .*absent\.crt: cannot be read \(ENOENT\)/],
      ] as const) {
        const config = parseConfig({ listen: '127.0.0.1:0', workers: 0, logLevel: 'silent', cacheDir: dir, upstreams: [{ host: 'docker.io', url: fwd.url }], tls });
        await assert.rejects(startGantry(config), (err: Error) => err instanceof StartupError && pattern.test(err.message) && !err.message.includes('\n'));
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  test('a renewal that leaves a key and certificate that do not match is logged; the certificate in use stays', async () => {
    const { node, files } = await startTls('half', 0);
    try {
      const port = Number(new URL(node.url).port);
      const other = await certFiles('half-other');
      await writeFile(files.keyFile, await readFile(other.keyFile));
      // Give the watcher time to see it (1 s polling + settle), then check nothing changed.
      await new Promise((r) => setTimeout(r, 2_500));
      assert.equal(await servedSerial(port), files.serial);
      assert.equal((await getBlob(node.url, trusting)).status, 200);
    } finally {
      await node.destroy();
    }
  });
});
