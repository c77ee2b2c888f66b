/** One line of the summary table: a figure measured on both mirrors, and the target if it has one. */
export type Row = {
  section: string;
  figure: string;
  gantry: number;
  baseline: number;
  format: (v: number) => string;
  /** Human-readable target, '' when the figure has none. */
  target: string;
  /** Evaluated against the target; undefined when there is no target or no value. */
  pass: boolean | undefined;
};

export const fmt = {
  seconds: (v: number): string => (Number.isFinite(v) ? `${(v / 1000).toFixed(2)} s` : 'n/a'),
  ms: (v: number): string => (Number.isFinite(v) ? `${v < 10 ? v.toFixed(2) : v.toFixed(1)} ms` : 'n/a'),
  count: (v: number): string => (Number.isFinite(v) ? String(Math.round(v)) : 'n/a'),
  ratio: (v: number): string => (Number.isFinite(v) ? v.toFixed(2) : 'n/a'),
  mibps: (v: number): string => (Number.isFinite(v) ? `${(v / 2 ** 20).toFixed(0)} MiB/s` : 'n/a'),
  mib: (v: number): string => (Number.isFinite(v) ? `${(v / 2 ** 20).toFixed(1)} MiB` : 'n/a'),
  rps: (v: number): string => (Number.isFinite(v) ? `${v.toFixed(0)}/s` : 'n/a'),
  times: (v: number): string => (Number.isFinite(v) ? `${v.toFixed(2)}x` : 'n/a'),
};

/** `g/b` as `1.23x`, or n/a. */
export function ratio(g: number, b: number): string {
  if (!Number.isFinite(g) || !Number.isFinite(b) || b === 0) return 'n/a';
  const r = g / b;
  return `${r >= 100 ? r.toFixed(0) : r >= 10 ? r.toFixed(1) : r.toFixed(2)}x`;
}

export function verdict(pass: boolean | undefined): string {
  return pass === undefined ? '' : pass ? 'PASS' : 'MISS';
}

/** Plain-text columns: each cell padded to its column's width, right-aligned in the `right` columns. */
export function renderColumns(header: string[], body: string[][], right: ReadonlySet<number>): string {
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((line) => (line[i] ?? '').length)));
  const line = (cells: string[]): string =>
    cells
      .map((c, i) => (right.has(i) ? c.padStart(widths[i] ?? 0) : c.padEnd(widths[i] ?? 0)))
      .join('  ')
      .trimEnd();
  const sep = widths.map((w) => '-'.repeat(w)).join('  ');
  return [line(header), sep, ...body.map(line)].join('\n');
}

/** A plain-text table: section, figure, gantry, baseline, gantry/baseline, target, verdict. */
export function renderTable(rows: Row[]): string {
  const header = ['#', 'figure', 'gantry', 'baseline', 'g/b', 'target', ''];
  const body = rows.map((r) => [r.section, r.figure, r.format(r.gantry), r.format(r.baseline), ratio(r.gantry, r.baseline), r.target, verdict(r.pass)]);
  return renderColumns(header, body, new Set([2, 3, 4]));
}

/** The closing "problems seen" block of a bench's output (a blank line first); empty when there are none. */
export function renderProblems(problems: readonly string[]): string {
  return problems.length === 0 ? '' : ['', 'problems seen:', ...problems.map((p) => `  - ${p}`)].join('\n');
}
