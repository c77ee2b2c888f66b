import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { cacheLocked, serverUrl } from '../../../src/cli/cache-access.ts';
import { LevelIndexStore } from '../../../src/store/index-store.ts';

describe('cacheLocked', () => {
  test('false for a cache that does not exist, true while an index store holds it, false once it is closed', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'gantry-cache-access-'));
    const index = new LevelIndexStore(path.join(dir, 'index'));
    try {
      assert.equal(await cacheLocked({ cacheDir: dir }), false);
      await index.open();
      assert.equal(await cacheLocked({ cacheDir: dir }), true);
      await index.close();
      assert.equal(await cacheLocked({ cacheDir: dir }), false);
    } finally {
      await index.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('serverUrl', () => {
  const at = (host: string, port = 5000): { listen: { host: string; port: number } } => ({ listen: { host, port } });
  test('--url wins, without trailing slashes', () => {
    assert.equal(serverUrl(at('0.0.0.0'), { url: 'http://10.0.0.1:9/' }), 'http://10.0.0.1:9');
  });
  test('wildcard listen hosts become loopback; IPv6 hosts are bracketed', () => {
    assert.equal(serverUrl(at('0.0.0.0'), {}), 'http://127.0.0.1:5000');
    assert.equal(serverUrl(at(''), {}), 'http://127.0.0.1:5000');
    assert.equal(serverUrl(at('::'), {}), 'http://[::1]:5000');
    assert.equal(serverUrl(at('::1'), {}), 'http://[::1]:5000');
    assert.equal(serverUrl(at('127.0.0.2', 81), {}), 'http://127.0.0.2:81');
  });
});
