// bench/proctree.ts: parsing /proc files, and measuring a real process tree.
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import {
  CLOCK_TICKS_PER_SEC,
  CpuMeter,
  TreeMemorySampler,
  describeTreeMemory,
  parseMachineBusyTicks,
  parseSmapsRollup,
  parseStat,
  parseStatus,
  processTree,
  readProcTable,
  readSmapsRollup,
  readTreeMemory,
  treeOf,
  treeTicks,
  type ProcStat,
} from '../../../bench/proctree.ts';

const MiB = 2 ** 20;

/** A /proc/<pid>/stat line (52 fields, as Linux 6.x writes them) with the given values. */
function statLine(pid: number, comm: string, ppid: number, utime: number, stime: number, cutime: number, cstime: number): string {
  const rest = [ppid, pid, pid, 0, -1, 4194560, 100, 0, 0, 0, utime, stime, cutime, cstime, 20, 0, 11, 0, 12345, 1000000, 2000, ...Array<number>(29).fill(0)];
  return `${pid} (${comm}) S ${rest.join(' ')}\n`;
}

describe('parseStat', () => {
  test('reads pid, comm, state, ppid and the four time fields', () => {
    assert.deepEqual(parseStat(statLine(4242, 'node', 17, 300, 45, 12, 3)), { pid: 4242, comm: 'node', state: 'S', ppid: 17, utime: 300, stime: 45, cutime: 12, cstime: 3 });
  });

  test('a process name with spaces and parentheses runs to the last ")"', () => {
    const s = parseStat(statLine(99, 'a) b (c) 1 2', 7, 1, 2, 3, 4));
    assert.equal(s?.comm, 'a) b (c) 1 2');
    assert.equal(s?.ppid, 7);
    assert.equal(s?.utime, 1);
    assert.equal(s?.cstime, 4);
  });

  test('parses this process\'s own stat file', () => {
    const table = readProcTable();
    const self = table.get(process.pid);
    assert.ok(self, 'this process is in the table');
    assert.equal(self.ppid, process.ppid);
    assert.ok(self.utime + self.stime > 0);
  });

  test('rejects what is not a stat line', () => {
    assert.equal(parseStat(''), undefined);
    assert.equal(parseStat('12 (x) S 1 2 3'), undefined);
    assert.equal(parseStat('Name:\tnode\n'), undefined);
  });
});

describe('parseSmapsRollup and parseStatus', () => {
  const rollup = [
    '5653efe98000-7ffc34e6b000 ---p 00000000 00:00 0                          [rollup]',
    'Rss:              204800 kB',
    'Pss:              150016 kB',
    'Pss_Dirty:        120000 kB',
    'Pss_Anon:         120000 kB',
    'Pss_File:          30016 kB',
    'Shared_Clean:      60000 kB',
    'Shared_Dirty:          0 kB',
    'Private_Clean:     24800 kB',
    'Private_Dirty:    120000 kB',
    'Swap:                 64 kB',
    'SwapPss:              64 kB',
  ].join('\n');

  test('Pss, Rss, private and swap in bytes; Pss_* lines do not shadow Pss', () => {
    assert.deepEqual(parseSmapsRollup(rollup), { rssBytes: 204800 * 1024, pssBytes: 150016 * 1024, privateBytes: (24800 + 120000) * 1024, swapBytes: 64 * 1024 });
  });

  test('no Pss line: undefined', () => {
    assert.equal(parseSmapsRollup('Rss:  100 kB\n'), undefined);
    assert.equal(parseSmapsRollup(''), undefined);
  });

  test('VmRSS and VmHWM from status', () => {
    assert.deepEqual(parseStatus('Name:\tnode\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\n'), { rssBytes: 1024 * 1024, hwmBytes: 2048 * 1024 });
  });

  test('this process\'s own smaps_rollup: 0 < PSS <= RSS', () => {
    const r = readSmapsRollup(process.pid);
    assert.ok(r, 'smaps_rollup readable');
    assert.ok(r.pssBytes > 0 && r.pssBytes <= r.rssBytes, JSON.stringify(r));
  });

  test('machine busy ticks: user + nice + system + irq + softirq + steal', () => {
    assert.equal(parseMachineBusyTicks('cpu  10 1 5 1000 7 2 3 4 0 0\ncpu0 1 1 1 1 1 1 1 1 0 0\n'), 10 + 1 + 5 + 2 + 3 + 4);
  });
});

describe('treeOf and treeTicks on a table', () => {
  const entries: ProcStat[] = [
    { pid: 1, comm: 'init', state: 'S', ppid: 0, utime: 1000, stime: 1000, cutime: 0, cstime: 0 },
    { pid: 10, comm: 'gantry', state: 'S', ppid: 1, utime: 100, stime: 20, cutime: 30, cstime: 5 },
    { pid: 11, comm: 'worker 1', state: 'S', ppid: 10, utime: 50, stime: 10, cutime: 0, cstime: 0 },
    { pid: 12, comm: 'worker 2', state: 'S', ppid: 10, utime: 40, stime: 0, cutime: 0, cstime: 0 },
    { pid: 13, comm: 'grandchild', state: 'S', ppid: 12, utime: 7, stime: 0, cutime: 0, cstime: 0 },
    { pid: 20, comm: 'other', state: 'S', ppid: 1, utime: 999, stime: 999, cutime: 0, cstime: 0 },
  ];
  const table = new Map(entries.map((e) => [e.pid, e]));

  test('the root and every descendant, root first, nothing else', () => {
    assert.deepEqual(treeOf(10, table), [10, 11, 12, 13]);
    assert.deepEqual(treeOf(12, table), [12, 13]);
    assert.deepEqual(treeOf(99, table), []);
  });

  test('ticks sum utime + stime + cutime + cstime over the tree (reaped children in cutime/cstime)', () => {
    assert.equal(treeTicks(10, table), 100 + 20 + 30 + 5 + 50 + 10 + 40 + 7);
    assert.ok(Number.isNaN(treeTicks(99, table)));
  });

  test('a PID-reuse cycle does not loop', () => {
    const loop = new Map<number, ProcStat>([
      [5, { pid: 5, comm: 'a', state: 'S', ppid: 6, utime: 1, stime: 0, cutime: 0, cstime: 0 }],
      [6, { pid: 6, comm: 'b', state: 'S', ppid: 5, utime: 1, stime: 0, cutime: 0, cstime: 0 }],
    ]);
    assert.deepEqual(treeOf(5, loop), [5, 6]);
  });
});

// The parent starts child 1, which touches 64 MiB and stays; on "burn" it starts child 2, which
// spends ~0.4 s of CPU and exits, and the parent says "reaped <pid>" once Node has reaped it.
const CHILD_HOLD = `const b = Buffer.alloc(${64 * MiB}, 1); process.stdout.write('held\\n'); setInterval(() => b[0]++, 1000);`;
const CHILD_BURN = `const t = process.cpuUsage(); let x = 0; while ((process.cpuUsage(t).user + process.cpuUsage(t).system) < 400000) x += Math.sqrt(x + 1);`;
const PARENT = `
const { spawn } = require('node:child_process');
const hold = spawn(process.execPath, ['-e', ${JSON.stringify(CHILD_HOLD)}], { stdio: ['ignore', 'pipe', 'inherit'] });
hold.stdout.on('data', (d) => { if (String(d).includes('held')) console.log('holder ' + hold.pid); });
process.stdin.setEncoding('utf8');
process.stdin.on('data', (d) => {
  if (!d.includes('burn')) return;
  const burn = spawn(process.execPath, ['-e', ${JSON.stringify(CHILD_BURN)}], { stdio: 'ignore' });
  console.log('burner ' + burn.pid);
  burn.on('exit', () => console.log('reaped ' + burn.pid));
});
`;

function killAll(pids: Iterable<number>): void {
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
}

describe('a real process tree', () => {
  test('memory and CPU of the tree exceed the parent alone; a reaped child\'s CPU still counts', { timeout: 60_000 }, async () => {
    const pids = new Set<number>();
    let parent: ChildProcess | undefined;
    try {
      parent = spawn(process.execPath, ['-e', PARENT], { stdio: ['pipe', 'pipe', 'inherit'] });
      const parentPid = parent.pid;
      assert.ok(parentPid !== undefined, 'parent spawned');
      pids.add(parentPid);
      const lines = createInterface({ input: parent.stdout! });
      const waiting = new Map<string, (rest: string) => void>();
      lines.on('line', (line) => {
        const [word = '', rest = ''] = line.split(' ');
        if (word !== 'reaped') pids.add(Number(rest));
        waiting.get(word)?.(rest);
      });
      const next = (word: string): Promise<number> =>
        new Promise((resolve, reject) => {
          waiting.set(word, (rest) => resolve(Number(rest)));
          parent?.once('exit', () => reject(new Error(`parent exited before "${word}"`)));
        });

      const holder = await next('holder');
      assert.deepEqual(processTree(parentPid), [parentPid, holder]);

      const parentAlone = readSmapsRollup(parentPid);
      const tree = readTreeMemory(parentPid);
      assert.ok(parentAlone && tree, 'both readable');
      assert.deepEqual(tree.pids, [parentPid, holder]);
      assert.equal(tree.pssFromRss, 0);
      assert.ok(tree.pssBytes > parentAlone.pssBytes + 60 * MiB, `tree PSS ${tree.pssBytes} vs parent ${parentAlone.pssBytes}`);
      assert.ok(tree.rssBytes >= tree.pssBytes, 'RSS sum counts shared pages once per process, so it is at least the PSS sum');
      assert.match(describeTreeMemory(tree), /^PSS \d+\.\d MiB of 2 processes \(RSS sum \d+\.\d MiB\)$/);

      const sampler = new TreeMemorySampler(parentPid, 25);
      await new Promise((r) => setTimeout(r, 150));
      const peak = sampler.stop();
      assert.ok(peak.peakBytes > parentAlone.pssBytes + 60 * MiB, `peak ${peak.peakBytes}`);
      assert.ok(peak.peakRssBytes >= peak.peakBytes);
      assert.equal(peak.processes, 2);
      assert.ok(peak.samples >= 2);
      assert.match(peak.method, /^peak PSS of 2 processes, sampled every 25 ms$/);

      // CPU: the burner exits and is reaped by the parent within the window; its time must still be
      // in the tree's figure (through the parent's cutime/cstime).
      const table0 = readProcTable();
      const ticks0 = treeTicks(parentPid, table0);
      const meter = new CpuMeter(parentPid);
      const reaped = next('reaped');
      parent.stdin!.write('burn\n');
      const burner = await reaped;
      assert.ok(pids.has(burner));
      const ticks = treeTicks(parentPid, readProcTable()) - ticks0;
      assert.ok(!readProcTable().has(burner), 'the burner is gone (reaped)');
      assert.ok(ticks >= 0.3 * CLOCK_TICKS_PER_SEC, `tree ticks over the window: ${ticks}`);
      const cpu = meter.read();
      assert.ok(cpu.proc > 0, `cores ${JSON.stringify(cpu)}`);
      assert.equal(cpu.processes, 2);
      // The parent alone (utime + stime) used far less than the burner.
      const parentOnly = readProcTable().get(parentPid);
      const parentOnly0 = table0.get(parentPid);
      assert.ok(parentOnly && parentOnly0);
      assert.ok(parentOnly.utime + parentOnly.stime - (parentOnly0.utime + parentOnly0.stime) < ticks, 'the tree counts more than the parent\'s own time');
      assert.ok(parentOnly.cutime + parentOnly.cstime - (parentOnly0.cutime + parentOnly0.cstime) >= 0.3 * CLOCK_TICKS_PER_SEC, 'the burner landed in cutime/cstime');
    } finally {
      // Children first, then the parent; every one by PID.
      if (parent?.pid !== undefined) for (const pid of processTree(parent.pid)) pids.add(pid);
      killAll([...pids].reverse());
      if (parent && parent.exitCode === null && parent.signalCode === null) await once(parent, 'exit');
    }
  });
});

describe('several roots (the nodes of a cluster)', () => {
  test('TreeMemorySampler and CpuMeter sum the trees of every root', { timeout: 30_000 }, async () => {
    const idle = (): ChildProcess => spawn(process.execPath, ['-e', 'process.stdout.write("up\\n"); setInterval(() => {}, 1000);'], { stdio: ['ignore', 'pipe', 'inherit'] });
    const children = [idle(), idle()];
    try {
      await Promise.all(children.map((c) => once(c.stdout!, 'data')));
      const roots = children.map((c) => c.pid ?? -1);
      const alone = roots.map((r) => readTreeMemory(r)?.pssBytes ?? NaN);
      const meter = new CpuMeter(roots);
      const sampler = new TreeMemorySampler(roots, 25);
      await new Promise((r) => setTimeout(r, 150));
      const peak = sampler.stop();
      assert.equal(peak.processes, 2);
      assert.match(peak.method, /^peak PSS of 2 processes, sampled every 25 ms$/);
      // Idle processes: the sum of the two, give or take pages the runtime touched meanwhile.
      const sum = (alone[0] ?? NaN) + (alone[1] ?? NaN);
      assert.ok(peak.peakBytes > 0.9 * sum && peak.peakBytes < sum + 16 * MiB, `peak ${peak.peakBytes} vs ${sum}`);
      const cpu = meter.read();
      assert.equal(cpu.processes, 2);
      assert.ok(cpu.proc >= 0 && cpu.secs > 0);
      // One root gone: no more samples of a partial sum.
      const later = new TreeMemorySampler(roots, 25);
      children[1]?.kill('SIGKILL');
      await once(children[1]!, 'exit');
      const before = later.stop();
      assert.equal(before.processes, 2, 'the peak is from before the root went away');
    } finally {
      for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    }
  });
});
