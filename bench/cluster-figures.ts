// The arithmetic of bench/cluster.ts, apart from its processes so it can be unit-tested: Gantry's
// /metrics text, which node filled a blob, the followers' first-byte delays, and the summary table.
import type { ColdRun } from './load.ts';
import { ratio, renderColumns, verdict } from './report.ts';

/** `name{k="v",...}` label pairs of one Prometheus sample line (exposition format 0.0.4). */
function labelsOf(block: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const m of block.matchAll(/([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) {
    out.set(m[1] ?? '', (m[2] ?? '').replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c)));
  }
  return out;
}

/**
 * Sum of the samples of metric `name` whose labels include all of `labels` (0 when there are none),
 * from Gantry's /metrics text. `name` must match exactly: `gantry_fills_total` does not match
 * `gantry_fills_total_bytes`.
 */
export function metricSum(text: string, name: string, labels: Readonly<Record<string, string>> = {}): number {
  let total = 0;
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    let rest: string;
    let have = new Map<string, string>();
    if (line.startsWith(`${name}{`)) {
      const close = line.lastIndexOf('}');
      if (close < 0) continue;
      have = labelsOf(line.slice(name.length + 1, close));
      rest = line.slice(close + 1);
    } else if (line.startsWith(`${name} `)) {
      rest = line.slice(name.length);
    } else {
      continue;
    }
    if (!Object.entries(labels).every(([k, v]) => have.get(k) === v)) continue;
    const value = Number(rest.trim().split(/\s+/)[0]);
    if (Number.isFinite(value)) total += value;
  }
  return total;
}

/**
 * Which node downloaded the blob: the one whose count of leases taken rose during the run, given
 * each node's rise. Undefined when none or several did (then "the node that filled" is not one).
 */
export function fillerOf(takenRise: readonly number[]): number | undefined {
  const rose = takenRise.flatMap((n, i) => (n > 0 ? [i] : []));
  return rose.length === 1 ? rose[0] : undefined;
}

export type FollowerDelays = {
  /** Latest first body byte of any client minus the earliest (the run's leader). */
  allMs: number;
  /** Latest first body byte of a client on the filling node, minus the leader's. */
  fillerNodeMs: number;
  /**
   * Latest first body byte of a client on any other node (its bytes came through the peer
   * endpoint), minus the leader's. NaN with one node, or when the filler is unknown.
   */
  otherNodesMs: number;
};

/** First-byte delays behind the run's leader, overall and by where the client's node got the bytes. */
export function followerDelays(run: ColdRun, filler: number | undefined): FollowerDelays {
  const leader = run.leaderTtfbMs;
  const maxOf = (xs: number[]): number => (xs.length > 0 && xs.every(Number.isFinite) ? Math.max(...xs) : NaN);
  const on = run.perNode.map((n) => n.firstByteMaxMs);
  return {
    allMs: run.maxFollowerDelayMs,
    fillerNodeMs: filler === undefined ? NaN : (on[filler] ?? NaN) - leader,
    otherNodesMs: filler === undefined ? NaN : maxOf(on.filter((_, i) => i !== filler)) - leader,
  };
}

/** One line of the summary: a figure for the 1-node and the 3-node set-up, and the target if it has one. */
export type ClusterRow = {
  section: string;
  figure: string;
  one: number;
  three: number;
  format: (v: number) => string;
  /** Human-readable target, '' when the issue gives none. */
  target: string;
  /** Evaluated against the target; undefined when there is none. */
  pass: boolean | undefined;
};

/** A plain-text table: section, figure, 1 node, 3 nodes, 3/1, target, verdict. */
export function renderClusterTable(rows: readonly ClusterRow[]): string {
  const header = ['#', 'figure', '1 node', '3 nodes', '3/1', 'target', ''];
  const body = rows.map((r) => [r.section, r.figure, r.format(r.one), r.format(r.three), ratio(r.three, r.one), r.target, verdict(r.pass)]);
  return renderColumns(header, body, new Set([2, 3, 4]));
}

/** Requests per back-end in an nginx access log whose lines end in `$upstream_addr`. */
export function requestsPerUpstream(accessLog: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of accessLog.split('\n')) {
    const addr = line.trim().split(' ').at(-1);
    if (addr === undefined || addr === '' || !/^[\d.]+:\d+$/.test(addr)) continue;
    out.set(addr, (out.get(addr) ?? 0) + 1);
  }
  return out;
}
