import { request } from 'undici';
import { ociErrorMessage } from '../oci/errors.ts';
import { adminHeaders } from '../transfer/export-remote.ts';
import type { PrefetchJob, PrefetchRequest } from './job.ts';

/** A call to the running Gantry's prefetch API that failed: `status` 0 when nothing answered. */
export class PrefetchApiError extends Error {
  readonly status: number;
  constructor(status: number, message: string) {
    super(message);
    this.status = status;
  }
}

const TIMEOUT_MS = 30_000;

/** The CLI's side of `/admin/prefetch`, at `baseUrl` with the admin token when one is configured. */
export class PrefetchClient {
  private readonly baseUrl: string;
  private readonly headers: Record<string, string>;

  constructor(baseUrl: string, adminToken: string | undefined) {
    this.baseUrl = baseUrl.replace(/\/+$/, '');
    this.headers = adminHeaders(adminToken);
  }

  submit(req: PrefetchRequest): Promise<PrefetchJob> {
    return this.call('POST', '/admin/prefetch', 202, req);
  }

  job(id: string): Promise<PrefetchJob> {
    return this.call('GET', `/admin/prefetch/${encodeURIComponent(id)}`, 200);
  }

  private async call<T>(method: 'GET' | 'POST', path: string, expected: number, body?: unknown): Promise<T> {
    let res;
    try {
      res = await request(`${this.baseUrl}${path}`, {
        method,
        headers: { ...this.headers, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
        body: body === undefined ? null : JSON.stringify(body),
        headersTimeout: TIMEOUT_MS,
        bodyTimeout: TIMEOUT_MS,
      });
    } catch (err) {
      throw new PrefetchApiError(0, `no Gantry answers at ${this.baseUrl} (${(err as Error).message}); prefetch runs in a serving Gantry: start it, or give its address with --url`);
    }
    const text = await res.body.text();
    if (res.statusCode !== expected) throw new PrefetchApiError(res.statusCode, `${this.baseUrl} answered ${res.statusCode}: ${ociErrorMessage(text) ?? text.slice(0, 300)}`);
    return JSON.parse(text) as T;
  }
}
