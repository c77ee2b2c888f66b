import type { Hono } from 'hono';
import { RegistryError } from '../oci/errors.ts';
import { parsePrefetchRequest, PrefetchInputError, type PrefetchJob, type PrefetchRequest } from '../prefetch/job.ts';
import type { AppEnv } from './app-env.ts';

/** What the routes need of the job runner (prefetch/jobs.ts). */
export type PrefetchService = {
  submit(req: PrefetchRequest): Promise<PrefetchJob>;
  /** In a cluster these ask Redis too (never failing on it), hence async. */
  get(id: string): Promise<PrefetchJob | undefined>;
  list(): Promise<PrefetchJob[]>;
};

/** A job request is a short list of references; anything bigger is not one. */
const MAX_BODY_BYTES = 1024 * 1024;

/**
 * `POST /admin/prefetch` `{"images": [...], "platforms": [...], "pin": false}` answers 202 with the
 * job (and its URL in Location); `GET /admin/prefetch/<id>` follows it; `GET /admin/prefetch`
 * lists the kept jobs, newest first. In a cluster, any node answers for any node's job. Bad input is a 400 whose OCI error message names the field.
 */
export function registerPrefetchRoutes(app: Hono<AppEnv>, svc: PrefetchService): void {
  // Mounted on the admin sub-app: its guard (loopback, admin token) has run.
  app.post('/prefetch', async (c) => {
    const req = parseOrReject(await readJson(c.req.raw));
    let job: PrefetchJob;
    try {
      job = await svc.submit(req);
    } catch (err) {
      if (err instanceof PrefetchInputError) throw badRequest(err.message);
      throw err;
    }
    return c.json(job, 202, { Location: `/admin/prefetch/${job.id}` });
  });
  app.get('/prefetch', async (c) => c.json({ jobs: await svc.list() }));
  app.get('/prefetch/:id', async (c) => {
    const job = await svc.get(c.req.param('id'));
    if (!job) throw new RegistryError('NAME_UNKNOWN', { message: `no prefetch job ${JSON.stringify(c.req.param('id').slice(0, 64))}` });
    return c.json(job);
  });
}

async function readJson(req: Request): Promise<unknown> {
  const length = Number(req.headers.get('content-length') ?? 0);
  if (length > MAX_BODY_BYTES) throw badRequest(`the body is larger than ${MAX_BODY_BYTES} bytes`);
  const text = await req.text();
  if (text.length > MAX_BODY_BYTES) throw badRequest(`the body is larger than ${MAX_BODY_BYTES} bytes`);
  try {
    return JSON.parse(text);
  } catch {
    throw badRequest('the body is not JSON: send {"images": ["nginx:1.27", ...], "platforms": ["linux/amd64"], "pin": false}');
  }
}

function parseOrReject(body: unknown): PrefetchRequest {
  try {
    return parsePrefetchRequest(body);
  } catch (err) {
    if (err instanceof PrefetchInputError) throw badRequest(err.message);
    throw err;
  }
}

function badRequest(message: string): RegistryError {
  return new RegistryError('NAME_INVALID', { status: 400, message });
}
