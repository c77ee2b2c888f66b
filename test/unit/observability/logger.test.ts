import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { accessLogger, createLogger } from '../../../src/observability/logger.ts';

function sink(): { stream: Writable; lines: () => Array<Record<string, unknown>> } {
  const chunks: string[] = [];
  const stream = new Writable({ write(chunk: Buffer, _enc, cb) { chunks.push(chunk.toString()); cb(); } });
  return { stream, lines: () => chunks.join('').trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>) };
}

test('the general logger redacts credentials; the access logger writes its fixed fields as they are', () => {
  const s = sink();
  const log = createLogger('info', s.stream);
  log.info({ headers: { authorization: 'Bearer secret' }, password: 'hunter2' }, 'something');
  accessLogger(log).info({ reqId: 'r1', method: 'GET', path: '/v2/a/manifests/latest', status: 200 }, 'request');
  const [general, access] = s.lines();
  assert.equal((general?.['headers'] as Record<string, unknown>)['authorization'], '[redacted]');
  assert.equal(general?.['password'], '[redacted]');
  assert.deepEqual({ ...access, time: undefined, pid: undefined, hostname: undefined }, {
    level: 30, time: undefined, pid: undefined, hostname: undefined, svc: 'gantry', reqId: 'r1', method: 'GET', path: '/v2/a/manifests/latest', status: 200, msg: 'request',
  });
});
