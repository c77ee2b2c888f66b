// The README quotes files of deploy/examples/ that the e2e tier runs the clients with: a block
// after `<!-- example: REL -->` must be deploy/examples/REL as it is, so what a reader copies is
// what was tested (test/e2e/https.test.ts for deploy/examples/https/).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));

test('each README block marked `<!-- example: REL -->` is deploy/examples/REL, byte for byte', async () => {
  const readme = await readFile(`${ROOT}README.md`, 'utf8');
  const blocks = [...readme.matchAll(/<!-- example: (\S+) -->\n```[a-z]*\n([\s\S]*?)```/g)];
  const marks = readme.split('<!-- example: ').length - 1;
  assert.equal(blocks.length, marks, 'every marker is followed by a fenced block');
  const quoted = blocks.map((m) => m[1] ?? '');
  // The HTTPS section quotes these; the e2e test runs the clients with them.
  for (const rel of ['https/daemon.json', 'https/containerd/docker.io/hosts.toml', 'https/registries.conf']) assert.ok(quoted.includes(rel), `the README quotes ${rel}`);
  for (const [, rel = '', body = ''] of blocks) {
    assert.equal(body, await readFile(`${ROOT}deploy/examples/${rel}`, 'utf8'), `README block for deploy/examples/${rel}`);
  }
});
