/** Rewrite README.md's configuration table from the settings table (src/config/schema.ts). */
import { readFileSync, writeFileSync } from 'node:fs';
import { withConfigTable } from '../src/config/docs.ts';

const README = new URL('../README.md', import.meta.url);
const before = readFileSync(README, 'utf8');
const after = withConfigTable(before);
if (after !== before) writeFileSync(README, after);
process.stdout.write(after === before ? 'README.md: configuration table already current\n' : 'README.md: configuration table rewritten\n');
