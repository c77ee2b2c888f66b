import { createLogger } from '../observability/logger.ts';
import { createMetrics } from '../observability/metrics.ts';
import { isToWorker, type FromWorker, type WorkerStart } from './messages.ts';
import { ServingProcess } from './serving-process.ts';

/**
 * Entry point of a serving process, forked by the main process (src/serving/supervisor.ts) with an
 * IPC channel: it waits for its `start` message, listens, and exits when told to stop or when the
 * main process goes away (the channel closes), so it never serves without one.
 */
const send = (m: FromWorker): void => {
  if (process.connected) process.send?.(m);
};

const start = await new Promise<WorkerStart>((resolve) => {
  const first = (m: unknown): void => {
    if (isToWorker(m) && m.t === 'start') {
      process.off('message', first);
      resolve(m);
    }
  };
  process.on('message', first);
});

const log = createLogger(start.logLevel).child({ worker: start.index });
const serving = new ServingProcess(start, { log, metrics: createMetrics(), send });
let stopping = false;
const stop = async (code: number): Promise<void> => {
  if (stopping) return;
  stopping = true;
  await serving.stop();
  log.flush();
  process.disconnect?.();
  process.exitCode = code;
};

process.on('message', (m: unknown) => {
  if (!isToWorker(m)) return;
  if (m.t === 'stop') void stop(0);
  else serving.onMessage(m);
});
// The main process is gone (kill -9 included): stop at once rather than serve without it.
process.on('disconnect', () => {
  if (!stopping) process.exit(1);
});
// Signals go to the whole process group (Ctrl-C, systemd): the main process sends `stop`.
process.on('SIGINT', () => undefined);
process.on('SIGTERM', () => undefined);

try {
  const port = await serving.listen();
  send({ t: 'listening', port });
} catch (err) {
  const e = err as NodeJS.ErrnoException;
  send({ t: 'failed', message: e.message, code: e.code });
  process.exit(1);
}
