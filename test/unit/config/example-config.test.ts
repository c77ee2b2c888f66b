import { test } from 'node:test';
import assert from 'node:assert/strict';
import { loadConfig } from '../../../src/config/load-config.ts';

test('deploy/config.example.yaml is a valid config (the documented example cannot rot)', async () => {
  const cfg = await loadConfig({ configPath: 'deploy/config.example.yaml' }, {});
  assert.deepEqual(cfg.listen, { host: '0.0.0.0', port: 5000 });
  assert.equal(cfg.maxCacheBytes, 50 * 2 ** 30);
  assert.equal(cfg.upstreams[0]?.url, 'https://registry-1.docker.io');
});

test('the embedded default config mirrors Docker Hub on 0.0.0.0:5000 with the cache in ./data', async () => {
  const cfg = await loadConfig({}, {});
  assert.deepEqual(cfg.listen, { host: '0.0.0.0', port: 5000 });
  assert.equal(cfg.cacheDir, './data');
  assert.deepEqual(cfg.upstreams, [{ host: 'docker.io', url: 'https://registry-1.docker.io' }]);
});
