import { SETTINGS } from './schema.ts';
import { walkSettings, type Fields, type Setting } from './setting.ts';
import { UPSTREAM_FIELDS } from './upstream-config.ts';

/**
 * The README's configuration table, rendered from the settings table. `npm run docs:config`
 * rewrites it between the markers; a unit test fails when README.md and the table disagree.
 */

export const TABLE_START = '<!-- config-table:start: generated from src/config/schema.ts by `npm run docs:config` -->';
export const TABLE_END = '<!-- config-table:end -->';

function code(v: unknown): string {
  return `\`${typeof v === 'string' ? v : JSON.stringify(v)}\``;
}

function defaultCell(s: Setting<unknown>): string {
  if (s.docDefault !== undefined) return s.docDefault;
  if (s.required) return 'required';
  return s.default === undefined ? 'none' : code(s.default);
}

function sourcesCell(s: Setting<unknown>, ofDefaultUpstream: boolean): string {
  const given = [s.env && code(s.env), s.flag && code(`--${s.flag}`)].filter(Boolean).join(' / ');
  if (given) return ofDefaultUpstream ? `${given} (default upstream)` : given;
  if (s.envFallback) return `${s.envFallback.map(code).join(' / ')} (when the file sets none)`;
  return '';
}

function rows(fields: Fields, prefix: string, ofDefaultUpstream: boolean): string[] {
  const out: string[] = [];
  for (const [key, s] of walkSettings(fields, prefix)) {
    const cells = [code(key === 'upstreams' ? 'upstreams[]' : key), s.type, defaultCell(s), sourcesCell(s, ofDefaultUpstream), s.help];
    out.push(`| ${cells.map((c) => c.replaceAll('|', '\\|')).join(' | ')} |`);
    if (key === 'upstreams') out.push(...rows(UPSTREAM_FIELDS, 'upstreams[].', true));
  }
  return out;
}

/** The Markdown table: one row per setting, nested ones and upstream entry keys with their path. */
export function renderConfigTable(): string {
  return ['| key | type | default | env / flag | meaning |', '|---|---|---|---|---|', ...rows(SETTINGS, '', false)].join('\n');
}

/** The table as README.md has it, between the markers; undefined without them. */
export function readmeConfigTable(readme: string): string | undefined {
  const start = readme.indexOf(TABLE_START);
  const end = readme.indexOf(TABLE_END);
  if (start < 0 || end < start) return undefined;
  return readme.slice(start + TABLE_START.length, end).trim();
}

/** README.md with the table between the markers replaced by the rendered one. */
export function withConfigTable(readme: string): string {
  const start = readme.indexOf(TABLE_START);
  const end = readme.indexOf(TABLE_END);
  if (start < 0 || end < start) throw new Error(`README.md has no ${TABLE_START} ... ${TABLE_END} markers`);
  return `${readme.slice(0, start + TABLE_START.length)}\n${renderConfigTable()}\n${readme.slice(end)}`;
}
