// Client-side load on its own thread: hashing 50 bodies or driving 64 connections must not stall
// the event loop that also runs the forwarders (their token buckets lose bandwidth when their
// timers run late).
import { parentPort, workerData } from 'node:worker_threads';
import { coldFetchMany, undiciLoad, type WorkerJob } from './load.ts';

const job = workerData as WorkerJob;
const result =
  job.kind === 'cold'
    ? await coldFetchMany(job.args.baseUrl, job.args.path, job.args.digest, job.args.size, job.args.clients, job.args.timeoutMs)
    : await undiciLoad(job.args);
parentPort?.postMessage(result);
