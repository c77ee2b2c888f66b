// Memory and CPU of a whole process tree (a PID and all its descendants), read from /proc.
//
// Gantry's primary forks worker processes and nginx is a master with workers, so the PID the bench
// started is only part of the server. The tree is found again at every reading: workers start
// after the master and may be restarted.
//
// Descendants are found by scanning /proc/*/stat for parent PIDs, not through
// /proc/<pid>/task/<tid>/children: that file needs CONFIG_PROC_CHILDREN (absent on some kernels,
// this bench machine's included) and the kernel documents it as reliable only while the children
// are frozen. A scan of a few hundred small files costs about a millisecond.
import { readFileSync, readdirSync } from 'node:fs';

const MiB = 2 ** 20;
/** USER_HZ on Linux: the unit of utime, stime, cutime and cstime in /proc/<pid>/stat. */
export const CLOCK_TICKS_PER_SEC = 100;

export function mib(bytes: number): string {
  return `${(bytes / MiB).toFixed(1)} MiB`;
}

// ---------------------------------------------------------------------------------------------
// Parsing

export type ProcStat = {
  pid: number;
  /** The executable's name (at most 15 characters; may hold spaces and parentheses). */
  comm: string;
  state: string;
  ppid: number;
  /** Clock ticks (CLOCK_TICKS_PER_SEC) this process spent in user and kernel mode. */
  utime: number;
  stime: number;
  /** Clock ticks of its children that it has waited for (reaped), theirs included recursively. */
  cutime: number;
  cstime: number;
};

/**
 * The fields of one /proc/<pid>/stat line; undefined if it is not one. comm is in parentheses and
 * may itself contain spaces and parentheses, so it runs to the last ')'.
 */
export function parseStat(text: string): ProcStat | undefined {
  const open = text.indexOf('(');
  const close = text.lastIndexOf(')');
  if (open < 0 || close < open) return undefined;
  const pid = Number(text.slice(0, open).trim());
  // After "pid (comm) ": state(0) ppid(1) pgrp(2) session(3) tty_nr(4) tpgid(5) flags(6) minflt(7)
  // cminflt(8) majflt(9) cmajflt(10) utime(11) stime(12) cutime(13) cstime(14) ...
  const f = text.slice(close + 2).trim().split(' ');
  if (f.length < 15) return undefined;
  const num = (i: number): number => Number(f[i]);
  const stat: ProcStat = {
    pid,
    comm: text.slice(open + 1, close),
    state: f[0] ?? '',
    ppid: num(1),
    utime: num(11),
    stime: num(12),
    cutime: num(13),
    cstime: num(14),
  };
  const numbers = [stat.pid, stat.ppid, stat.utime, stat.stime, stat.cutime, stat.cstime];
  return numbers.every((n) => Number.isInteger(n) && n >= 0) ? stat : undefined;
}

export type SmapsRollup = { rssBytes: number; pssBytes: number; privateBytes: number; swapBytes: number };

/**
 * Rss, Pss, Private_Clean + Private_Dirty and Swap from /proc/<pid>/smaps_rollup (kB in the file);
 * undefined without a Pss line (not a smaps_rollup, or a kernel older than 4.14).
 */
export function parseSmapsRollup(text: string): SmapsRollup | undefined {
  const kb = (field: string): number | undefined => {
    const m = new RegExp(`^${field}:\\s+(\\d+)\\s+kB`, 'm').exec(text);
    return m ? Number(m[1]) * 1024 : undefined;
  };
  const pss = kb('Pss');
  if (pss === undefined) return undefined;
  return { rssBytes: kb('Rss') ?? 0, pssBytes: pss, privateBytes: (kb('Private_Clean') ?? 0) + (kb('Private_Dirty') ?? 0), swapBytes: kb('Swap') ?? 0 };
}

/** VmRSS and VmHWM (peak RSS) from /proc/<pid>/status text. */
export function parseStatus(text: string): { rssBytes: number; hwmBytes: number } {
  const kb = (field: string): number => {
    const m = new RegExp(`^${field}:\\s+(\\d+)\\s+kB`, 'm').exec(text);
    return m ? Number(m[1]) * 1024 : 0;
  };
  return { rssBytes: kb('VmRSS'), hwmBytes: kb('VmHWM') };
}

// ---------------------------------------------------------------------------------------------
// The process table and trees in it

/** Every process's stat line now, by PID. Processes that exit during the scan are left out. */
export function readProcTable(): Map<number, ProcStat> {
  const table = new Map<number, ProcStat>();
  let dirs: string[];
  try {
    dirs = readdirSync('/proc');
  } catch {
    return table;
  }
  for (const d of dirs) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const s = parseStat(readFileSync(`/proc/${d}/stat`, 'utf8'));
      if (s !== undefined) table.set(s.pid, s);
    } catch {
      // exited meanwhile
    }
  }
  return table;
}

/** `root` and all its descendants in `table`, root first; empty when root is not in it. */
export function treeOf(root: number, table: ReadonlyMap<number, ProcStat>): number[] {
  if (!table.has(root)) return [];
  const children = new Map<number, number[]>();
  for (const s of table.values()) {
    if (s.pid === s.ppid) continue;
    const list = children.get(s.ppid);
    if (list) list.push(s.pid);
    else children.set(s.ppid, [s.pid]);
  }
  const out = [root];
  const seen = new Set(out);
  for (let i = 0; i < out.length; i++) {
    for (const c of children.get(out[i] ?? -1) ?? []) {
      if (seen.has(c)) continue; // PID reuse between reads could make a cycle
      seen.add(c);
      out.push(c);
    }
  }
  return out;
}

/** The live PIDs of `root`'s tree (root first); empty once root is gone. */
export function processTree(root: number): number[] {
  return treeOf(root, readProcTable());
}

// ---------------------------------------------------------------------------------------------
// Memory

export type ProcMemory = { rssBytes: number; hwmBytes: number };

/** VmRSS and VmHWM (peak RSS) of one live process; undefined once it is gone. */
export function readProcMemory(pid: number): ProcMemory | undefined {
  try {
    return parseStatus(readFileSync(`/proc/${pid}/status`, 'utf8'));
  } catch {
    return undefined;
  }
}

/** One process's smaps_rollup; undefined if gone or not readable. */
export function readSmapsRollup(pid: number): SmapsRollup | undefined {
  try {
    return parseSmapsRollup(readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'));
  } catch {
    return undefined;
  }
}

export type TreeMemory = {
  /** PIDs measured, root first. */
  pids: number[];
  /**
   * Sum of PSS: each page counted once over all processes mapping it, shared pages split between
   * them. This is the figure to compare: the Node binary's and libraries' file pages are shared by
   * every Node process, so summing RSS would count them once per process.
   */
  pssBytes: number;
  /** Sum of RSS, for reference (counts shared pages once per process). */
  rssBytes: number;
  /** Processes whose smaps_rollup could not be read; their RSS stands in for their PSS. */
  pssFromRss: number;
};

/**
 * PSS and RSS summed over `root`'s process tree; undefined once root is gone. `pids` skips the
 * /proc scan (a tree found just before).
 */
export function readTreeMemory(root: number, pids: readonly number[] = processTree(root)): TreeMemory | undefined {
  const out: TreeMemory = { pids: [], pssBytes: 0, rssBytes: 0, pssFromRss: 0 };
  for (const pid of pids) {
    const r = readSmapsRollup(pid);
    if (r !== undefined) {
      out.pids.push(pid);
      out.pssBytes += r.pssBytes;
      out.rssBytes += r.rssBytes;
      continue;
    }
    const s = readProcMemory(pid); // no smaps_rollup (permission, old kernel) or just exited
    if (s === undefined || (s.rssBytes === 0 && pid !== root)) continue;
    out.pids.push(pid);
    out.pssBytes += s.rssBytes;
    out.rssBytes += s.rssBytes;
    out.pssFromRss += 1;
  }
  return out.pids[0] === root ? out : undefined;
}

/** "PSS 123.4 MiB of 3 processes (RSS sum 150.0 MiB)". */
export function describeTreeMemory(m: TreeMemory | undefined): string {
  if (m === undefined) return 'gone';
  const n = m.pids.length;
  const approx = m.pssFromRss > 0 ? `; RSS for PSS in ${m.pssFromRss}` : '';
  return `PSS ${mib(m.pssBytes)} of ${n} process${n === 1 ? '' : 'es'} (RSS sum ${mib(m.rssBytes)}${approx})`;
}

export type MemoryPeak = {
  /** Largest tree PSS sum seen in one sample (the figure the bench reports). */
  peakBytes: number;
  /** Largest tree RSS sum (VmRSS summed) seen in one sample (not necessarily the same sample). */
  peakRssBytes: number;
  /** Processes in the tree at the sample with the largest PSS sum. */
  processes: number;
  /** Most processes seen in one sample. */
  maxProcesses: number;
  samples: number;
  /** How it was measured, for the printed line: "peak PSS of 3 processes, sampled every 25 ms". */
  method: string;
};

/** How often TreeMemorySampler looks for new processes in the tree (and at once when one is gone). */
const TREE_REFRESH_MS = 250;
/** TreeMemorySampler reads PSS at least this often, and whenever the RSS sum reaches a new high. */
const PSS_FLOOR_MS = 250;
/** A new high of the RSS sum: this much above the RSS sum when PSS was last read at a high. */
const NEW_HIGH_BYTES = MiB;

/**
 * Samples the memory of `root`'s process tree while running; the peak is the largest PSS sum over
 * the tree seen in one sample. The tree is found again every 250 ms, and at once when one of its
 * processes is gone (a restarted worker).
 *
 * No VmHWM: it is a per-process peak of RSS. Summing it over a tree adds peaks from different
 * moments, it counts shared pages once per process, and PSS has no high-water mark at all; using
 * it only while the tree is one process would change what the figure means with the process count.
 * So the peak is sampled only, and a spike shorter than the interval can be missed (25 ms: the
 * bench's 100 MiB blobs take seconds to stream, so its buffers live far longer than that).
 *
 * Cost: PSS comes from /proc/<pid>/smaps_rollup, which walks the process's page tables (~4 ms for
 * a Node process of 330 MiB, on the bench's CPU, which it shares with the server under test), and
 * finding the tree scans /proc (~1.5 ms). Every interval the sampler only reads VmRSS of the known
 * processes (~25 µs each) and sums it; it reads PSS when that sum reaches a new high (by 1 MiB over
 * the last such read) and otherwise at most every 250 ms. Anonymous memory, which is what grows
 * under load, counts in full in both PSS and RSS, so PSS peaks where the RSS sum does; a PSS peak
 * away from an RSS high would need the shared pages' split to move by over 1 MiB meanwhile.
 */
export class TreeMemorySampler {
  readonly #roots: readonly number[];
  readonly #intervalMs: number;
  /** The known tree of each root, in the order of #roots. */
  #trees: number[][] = [];
  #pids: number[] = [];
  #pidsAt = -Infinity;
  #pssAt = -Infinity;
  #pssMark = -Infinity;
  #peak: TreeMemory | undefined;
  #peakRss = 0;
  #maxProcesses = 0;
  #samples = 0;
  #timer: NodeJS.Timeout | undefined;

  /**
   * `root` may be several PIDs (several servers, e.g. the nodes of a cluster): each sample then
   * sums their trees, and stops counting once one of them is gone.
   */
  constructor(root: number | readonly number[], intervalMs = 25) {
    this.#roots = typeof root === 'number' ? [root] : [...root];
    this.#intervalMs = intervalMs;
    this.#sample(true);
    this.#timer = setInterval(() => this.#sample(false), intervalMs);
  }

  #findTrees(now: number): void {
    const table = readProcTable();
    this.#trees = this.#roots.map((r) => treeOf(r, table));
    this.#pids = this.#trees.flat();
    this.#pidsAt = now;
  }

  /** VmRSS summed over the known trees; undefined if one of their processes is gone. */
  #rssSum(): number | undefined {
    let sum = 0;
    for (const pid of this.#pids) {
      const m = readProcMemory(pid);
      if (m === undefined) return undefined;
      sum += m.rssBytes;
    }
    return sum;
  }

  /** PSS and RSS summed over every root's tree; undefined once a root is gone. */
  #readTrees(): TreeMemory | undefined {
    const out: TreeMemory = { pids: [], pssBytes: 0, rssBytes: 0, pssFromRss: 0 };
    for (let i = 0; i < this.#roots.length; i++) {
      const m = readTreeMemory(this.#roots[i] ?? -1, this.#trees[i] ?? []);
      if (m === undefined) return undefined;
      out.pids.push(...m.pids);
      out.pssBytes += m.pssBytes;
      out.rssBytes += m.rssBytes;
      out.pssFromRss += m.pssFromRss;
    }
    return out;
  }

  #sample(force: boolean): void {
    const now = performance.now();
    if (now - this.#pidsAt >= TREE_REFRESH_MS) this.#findTrees(now);
    let rss = this.#rssSum();
    if (rss === undefined) {
      this.#findTrees(now);
      rss = this.#rssSum();
    }
    // A root gone (or a tree changing under us).
    if (rss === undefined || this.#trees.length === 0 || this.#trees.some((t) => t.length === 0)) return;
    this.#samples += 1;
    this.#peakRss = Math.max(this.#peakRss, rss);
    this.#maxProcesses = Math.max(this.#maxProcesses, this.#pids.length);
    if (!force && rss <= this.#pssMark && now - this.#pssAt < PSS_FLOOR_MS) return;
    const m = this.#readTrees();
    if (m === undefined) return;
    this.#pssAt = now;
    if (rss > this.#pssMark) this.#pssMark = rss + NEW_HIGH_BYTES;
    if (this.#peak === undefined || m.pssBytes > this.#peak.pssBytes) this.#peak = m;
  }

  /** Stop sampling (one last sample first); the peak over the window. */
  stop(): MemoryPeak {
    clearInterval(this.#timer);
    this.#timer = undefined;
    this.#sample(true);
    const n = this.#peak?.pids.length ?? 0;
    const approx = (this.#peak?.pssFromRss ?? 0) > 0 ? `, RSS for PSS in ${this.#peak?.pssFromRss} (smaps_rollup unreadable)` : '';
    return {
      peakBytes: this.#peak?.pssBytes ?? NaN,
      peakRssBytes: this.#samples > 0 ? this.#peakRss : NaN,
      processes: n,
      maxProcesses: this.#maxProcesses,
      samples: this.#samples,
      method: `peak PSS of ${n} process${n === 1 ? '' : 'es'}${this.#maxProcesses !== n ? ` (up to ${this.#maxProcesses} seen)` : ''}, sampled every ${this.#intervalMs} ms${approx}`,
    };
  }
}

// ---------------------------------------------------------------------------------------------
// CPU

/**
 * Clock ticks used by `root`'s tree: utime + stime + cutime + cstime of every live process in it.
 * The c-fields hold the time of children a process has waited for, so a worker that exits and is
 * reaped by its parent in the tree (Node and nginx's master reap theirs) keeps counting; the sum
 * only grows as processes exit. Time of a process that was orphaned (reparented outside the tree)
 * before it exited is lost, as is that of one root itself has not reaped yet once root is gone.
 * NaN when root is not in the table.
 */
export function treeTicks(root: number, table: ReadonlyMap<number, ProcStat>): number {
  const pids = treeOf(root, table);
  if (pids.length === 0) return NaN;
  let total = 0;
  for (const pid of pids) {
    const s = table.get(pid);
    if (s !== undefined) total += s.utime + s.stime + s.cutime + s.cstime;
  }
  return total;
}

/** Busy ticks of the whole machine (everything but idle and iowait) from /proc/stat's cpu line. */
export function parseMachineBusyTicks(procStat: string): number {
  const first = procStat.split('\n', 1)[0] ?? '';
  const [, user = 0, nice = 0, system = 0, , , irq = 0, softirq = 0, steal = 0] = first.trim().split(/\s+/).map(Number);
  return user + nice + system + irq + softirq + steal;
}

function machineBusyTicks(): number {
  return parseMachineBusyTicks(readFileSync('/proc/stat', 'utf8'));
}

/**
 * Measures, over a window, the cores used by one process tree of interest (the server under test:
 * the PID and all its descendants, reaped ones included), by the bench with all its other
 * descendants, and by everything else on the machine. The tree of interest may be several (the
 * nodes of a cluster): their figures are summed.
 */
export class CpuMeter {
  readonly #pids: readonly number[];
  readonly #t = performance.now();
  readonly #busy = machineBusyTicks();
  readonly #own: number;
  readonly #proc: number;

  constructor(pid?: number | readonly number[]) {
    this.#pids = pid === undefined ? [] : typeof pid === 'number' ? [pid] : [...pid];
    const table = readProcTable();
    this.#own = treeTicks(process.pid, table);
    this.#proc = this.#ticks(table);
  }

  #ticks(table: ReadonlyMap<number, ProcStat>): number {
    return this.#pids.reduce((sum, p) => sum + treeTicks(p, table), 0);
  }

  /**
   * Cores used since construction: `proc` by the tree(s) of interest, `own` by the bench and its
   * other descendants, `other` by the rest. `processes`: the size of the tree(s) of interest now.
   * `secs`: the window's length.
   */
  read(): { proc: number; own: number; other: number; processes: number; secs: number } {
    const secs = (performance.now() - this.#t) / 1000;
    const busy = (machineBusyTicks() - this.#busy) / CLOCK_TICKS_PER_SEC / secs;
    const table = readProcTable();
    const ownAll = (treeTicks(process.pid, table) - this.#own) / CLOCK_TICKS_PER_SEC / secs;
    const proc = (this.#ticks(table) - this.#proc) / CLOCK_TICKS_PER_SEC / secs;
    const processes = this.#pids.reduce((sum, p) => sum + treeOf(p, table).length, 0);
    return { proc, own: Math.max(0, ownAll - proc), other: Math.max(0, busy - ownAll), processes, secs };
  }
}
