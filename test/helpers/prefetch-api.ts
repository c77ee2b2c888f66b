// A test's side of /admin/prefetch on a running Gantry (loopback, no admin token): submit a job,
// read it back, wait (bounded) for it to finish.
import assert from 'node:assert/strict';
import { request } from 'undici';
import { waitFor } from './wait-for.ts';

export type Job = {
  id: string;
  state: string;
  node?: string;
  images: Array<{ ref: string; digest?: string; state: string; blobs: number; blobsDone: number; bytes: number; bytesDone: number; error?: string }>;
};

/** One call; `body` is sent as is (a test may send what is not JSON). */
export async function api(url: string, method: 'GET' | 'POST', body?: string): Promise<{ status: number; json: unknown }> {
  const res = await request(url, { method, body: body ?? null, headers: body === undefined ? {} : { 'content-type': 'application/json' }, headersTimeout: 10_000, bodyTimeout: 10_000 });
  const text = await res.body.text();
  return { status: res.statusCode, json: text === '' ? undefined : (JSON.parse(text) as unknown) };
}

export async function submit(node: { url: string }, body: unknown): Promise<Job> {
  const r = await api(`${node.url}/admin/prefetch`, 'POST', JSON.stringify(body));
  assert.equal(r.status, 202, JSON.stringify(r.json));
  return r.json as Job;
}

export async function jobOf(node: { url: string }, id: string): Promise<Job> {
  const r = await api(`${node.url}/admin/prefetch/${id}`, 'GET');
  assert.equal(r.status, 200, JSON.stringify(r.json));
  return r.json as Job;
}

export async function finished(node: { url: string }, id: string, timeoutMs = 30_000): Promise<Job> {
  return waitFor(`prefetch job ${id} to finish`, async () => {
    const job = await jobOf(node, id);
    return job.state === 'done' || job.state === 'failed' ? job : undefined;
  }, { timeoutMs, intervalMs: 100 });
}
