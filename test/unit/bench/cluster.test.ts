// bench/cluster.ts's pure parts: its options, Gantry's /metrics text, who filled, follower delays,
// the per-node split of a cold run, the nginx balancer's config and the summary table.
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { fillerOf, followerDelays, metricSum, renderClusterTable, requestsPerUpstream } from '../../../bench/cluster-figures.ts';
import { summarizeCold, type ClientResult, type ColdRun } from '../../../bench/load.ts';
import { UsageError, parseClusterOptions } from '../../../bench/options.ts';
import { renderNginxBalancerConfig } from '../../../bench/procs.ts';
import { fmt } from '../../../bench/report.ts';

const MiB = 2 ** 20;

describe('parseClusterOptions', () => {
  test('defaults: 100 MiB, 30 clients, 25 MB/s, 5 s runs at 64 connections', () => {
    const o = parseClusterOptions([], {});
    assert.ok(o !== 'help');
    assert.equal(o.quick, false);
    assert.equal(o.blobBytes, 100 * MiB);
    assert.equal(o.clients, 30);
    assert.equal(o.bandwidth, 25e6);
    assert.equal(o.latencyMs, 20);
    assert.equal(o.durationMs, 5000);
    assert.equal(o.connections, 64);
    assert.equal(o.loadgen, 'auto');
    assert.equal(o.smallBlobBytes, MiB);
    assert.equal(o.s3, true);
    assert.ok(o.deadlineMs > 4 * 60_000 && o.deadlineMs < 20 * 60_000, `deadline ${o.deadlineMs}`);
  });

  test('--quick: 16 MiB, 6 clients, 2 s runs; explicit flags win over it', () => {
    const q = parseClusterOptions(['--quick'], {});
    assert.ok(q !== 'help');
    assert.deepEqual([q.blobBytes, q.clients, q.durationMs], [16 * MiB, 6, 2000]);
    const o = parseClusterOptions(['--quick', '--blob-size', '8MiB', '--clients', '9', '--bandwidth', '50MB', '--duration', '3', '--connections', '16'], {});
    assert.ok(o !== 'help');
    assert.deepEqual([o.blobBytes, o.clients, o.bandwidth, o.durationMs, o.connections], [8 * MiB, 9, 50e6, 3000, 16]);
  });

  test('--no-s3: Redis and peers only', () => {
    const o = parseClusterOptions(['--no-s3'], {});
    assert.ok(o !== 'help');
    assert.equal(o.s3, false);
  });

  test('bandwidth, latency, load generator and wait-idle from the environment', () => {
    const o = parseClusterOptions([], { BENCH_BANDWIDTH: '10MiB', BENCH_LATENCY_MS: '0', BENCH_LOADGEN: 'undici', BENCH_WAIT_IDLE: '30' });
    assert.ok(o !== 'help');
    assert.deepEqual([o.bandwidth, o.latencyMs, o.loadgen, o.waitIdleMs], [10 * MiB, 0, 'undici', 30_000]);
  });

  test('a longer run gets a longer deadline', () => {
    const a = parseClusterOptions(['--blob-size', '16MiB'], {});
    const b = parseClusterOptions(['--blob-size', '400MiB'], {});
    assert.ok(a !== 'help' && b !== 'help');
    assert.ok(b.deadlineMs > a.deadlineMs);
  });

  test('--help; bad values and unknown flags are usage errors', () => {
    assert.equal(parseClusterOptions(['--help'], {}), 'help');
    assert.equal(parseClusterOptions(['-h'], {}), 'help');
    for (const argv of [['--clients', '2'], ['--clients', 'x'], ['--blob-size', '0'], ['--bandwidth', 'fast'], ['--loadgen', 'ab'], ['--duration', '0'], ['--rounds', '2'], ['stray']]) {
      assert.throws(() => parseClusterOptions(argv, {}), UsageError, argv.join(' '));
    }
  });
});

describe('metricSum', () => {
  const text = [
    '# HELP gantry_fill_leases_total Cluster fill leases',
    '# TYPE gantry_fill_leases_total counter',
    'gantry_fill_leases_total{result="taken"} 2',
    'gantry_fill_leases_total{result="peer"} 5',
    'gantry_fill_leases_total_extra{result="taken"} 100',
    'gantry_peer_bytes_total{direction="received",node="a,\\"b\\""} 1048576',
    'gantry_redis_up 1',
    '',
  ].join('\n');

  test('one sample by its labels; absent is 0', () => {
    assert.equal(metricSum(text, 'gantry_fill_leases_total', { result: 'taken' }), 2);
    assert.equal(metricSum(text, 'gantry_fill_leases_total', { result: 'taken_over' }), 0);
    assert.equal(metricSum(text, 'gantry_nothing_total'), 0);
  });

  test('without labels: every sample of that exact name, summed', () => {
    assert.equal(metricSum(text, 'gantry_fill_leases_total'), 7);
    assert.equal(metricSum(text, 'gantry_redis_up'), 1);
  });

  test('label values with commas and escaped quotes', () => {
    assert.equal(metricSum(text, 'gantry_peer_bytes_total', { direction: 'received', node: 'a,"b"' }), MiB);
    assert.equal(metricSum(text, 'gantry_peer_bytes_total', { direction: 'sent' }), 0);
  });
});

describe('fillerOf', () => {
  test('the one node whose leases taken rose', () => {
    assert.equal(fillerOf([0, 0, 1]), 2);
    assert.equal(fillerOf([1]), 0);
  });
  test('none or several: unknown', () => {
    assert.equal(fillerOf([0, 0, 0]), undefined);
    assert.equal(fillerOf([1, 0, 1]), undefined);
  });
});

/** A client that got its first byte at t0 + first and finished at t0 + end. */
function client(first: number | undefined, end: number, error?: string): ClientResult {
  return { status: error ? 0 : 200, bytes: 10, digestOk: !error, start: 1000, firstByte: first === undefined ? undefined : 1000 + first, prevChunk: undefined, lastChunk: undefined, end: 1000 + end, error };
}

describe('summarizeCold', () => {
  test('client i belongs to node i % n; per-node first bytes and ends relative to the start', () => {
    const results = [client(10, 500), client(40, 700), client(60, 650), client(15, 520), client(45, 710, 'HTTP 502')];
    const run = summarizeCold(results, ['http://a', 'http://b', 'http://c'], 1000);
    assert.equal(run.clients, 5);
    assert.equal(run.ok, 4);
    assert.deepEqual(run.failures, ['HTTP 502']);
    assert.equal(run.totalMs, 710);
    assert.equal(run.leaderTtfbMs, 10);
    assert.equal(run.maxFollowerDelayMs, 50);
    assert.deepEqual(run.perNode.map((n) => [n.baseUrl, n.clients, n.ok, n.firstByteMinMs, n.firstByteMaxMs, n.lastEndMs]), [
      ['http://a', 2, 2, 10, 15, 520],
      ['http://b', 2, 1, 40, 45, 710],
      ['http://c', 1, 1, 60, 60, 650],
    ]);
  });

  test('one base URL: one entry with every client', () => {
    const run = summarizeCold([client(5, 100), client(8, 120)], ['http://a'], 1000);
    assert.equal(run.perNode.length, 1);
    assert.equal(run.perNode[0]?.clients, 2);
  });

  test('a node none of whose clients got a byte: NaN first bytes', () => {
    const run = summarizeCold([client(5, 100), client(undefined, 90, 'timeout')], ['http://a', 'http://b'], 1000);
    assert.ok(Number.isNaN(run.perNode[1]?.firstByteMaxMs));
  });
});

describe('followerDelays', () => {
  const run = (leader: number, perNodeMax: number[], all: number): ColdRun => ({
    clients: perNodeMax.length, totalMs: 1000, leaderTtfbMs: leader, maxFollowerDelayMs: all, maxFinalChunkWaitMs: 0, ok: perNodeMax.length, failures: [],
    perNode: perNodeMax.map((m, i) => ({ baseUrl: `http://n${i}`, clients: 1, ok: 1, firstByteMinMs: leader, firstByteMaxMs: m, lastEndMs: 1000 })),
  });

  test('other nodes: their latest first byte behind the leader; the filler apart', () => {
    const d = followerDelays(run(100, [180, 250, 130], 150), 2);
    assert.equal(d.allMs, 150);
    assert.equal(d.fillerNodeMs, 30);
    assert.equal(d.otherNodesMs, 150);
  });

  test('one node, or no known filler: no "other nodes" figure', () => {
    assert.ok(Number.isNaN(followerDelays(run(100, [140], 40), 0).otherNodesMs));
    assert.ok(Number.isNaN(followerDelays(run(100, [140, 150], 50), undefined).otherNodesMs));
  });
});

describe('renderNginxBalancerConfig', () => {
  const conf = renderNginxBalancerConfig(['127.0.0.1:4001', '127.0.0.1:4002', '127.0.0.1:4003'], '/tmp/p', 8080, false);

  test('round-robin over every back-end, kept alive, streamed unbuffered', () => {
    assert.match(conf, /upstream gantry \{\n {4}server 127\.0\.0\.1:4001;\n {4}server 127\.0\.0\.1:4002;\n {4}server 127\.0\.0\.1:4003;\n {4}keepalive 32;/);
    assert.doesNotMatch(conf, /least_conn|ip_hash|hash /);
    for (const d of ['proxy_pass http://gantry;', 'proxy_http_version 1.1;', 'proxy_set_header Connection "";', 'proxy_buffering off;', 'proxy_buffer_size 64k;', 'listen 127.0.0.1:8080;', 'daemon off;']) assert.ok(conf.includes(d), d);
  });

  test('the access log names the back-end that answered; root only when asked', () => {
    assert.match(conf, /log_format balanced '.*\$upstream_addr';/);
    assert.match(conf, /access_log \/tmp\/p\/access\.log balanced;/);
    assert.doesNotMatch(conf, /user root/);
    assert.match(renderNginxBalancerConfig(['127.0.0.1:1'], '/tmp/p', 1, true), /user root;/);
  });

  test('no back-end is an error', () => {
    assert.throws(() => renderNginxBalancerConfig([], '/tmp/p', 1, false));
  });
});

describe('requestsPerUpstream', () => {
  test('counts the last field of each access-log line', () => {
    const line = (addr: string): string => `127.0.0.1 - - [03/Dec/2026:18:27:24 +0000] "GET /v2/x/blobs/sha256:ab HTTP/1.1" 200 1048576 "-" "wrk" ${addr}`;
    const counts = requestsPerUpstream([line('127.0.0.1:4001'), line('127.0.0.1:4002'), line('127.0.0.1:4001'), line('-'), ''].join('\n'));
    assert.deepEqual([...counts.entries()], [['127.0.0.1:4001', 2], ['127.0.0.1:4002', 1]]);
  });
});

describe('renderClusterTable', () => {
  test('1 node, 3 nodes, their ratio and the verdict', () => {
    const out = renderClusterTable([
      { section: 'cold', figure: 'upstream bytes ratio', one: 1, three: 1, format: fmt.ratio, target: '1.00 (3 nodes)', pass: true },
      { section: 'cold', figure: 'wall time', one: 4000, three: 5000, format: fmt.seconds, target: '', pass: undefined },
      { section: 'cold', figure: 'other nodes', one: NaN, three: 70, format: fmt.ms, target: '', pass: undefined },
    ]);
    const lines = out.split('\n');
    assert.match(lines[0] ?? '', /^#\s+figure\s+1 node\s+3 nodes\s+3\/1\s+target$/);
    assert.match(lines[2] ?? '', /upstream bytes ratio\s+1\.00\s+1\.00\s+1\.00x\s+1\.00 \(3 nodes\)\s+PASS$/);
    assert.match(lines[3] ?? '', /wall time\s+4\.00 s\s+5\.00 s\s+1\.25x$/);
    assert.match(lines[4] ?? '', /other nodes\s+n\/a\s+70\.0 ms\s+n\/a$/);
  });
});
