import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { readmeConfigTable, renderConfigTable } from '../../../src/config/docs.ts';

test("README's configuration table is the one the settings table renders (npm run docs:config)", () => {
  const readme = readFileSync(new URL('../../../README.md', import.meta.url), 'utf8');
  const inReadme = readmeConfigTable(readme);
  assert.ok(inReadme !== undefined, 'README.md lost its config-table markers');
  assert.equal(inReadme, renderConfigTable(), 'README.md is stale: run npm run docs:config');
});
