import { request } from 'undici';
import { adminHeaders, errorMessage } from './export-remote.ts';
import { PinError, type PinView } from './pins.ts';

/** Listing and releasing pins is quick; a silent server is not waited on for long. */
const TIMEOUT_MS = 30_000;

/** `GET /admin/pins` of the running Gantry at `url`. */
export async function listPinsThrough(url: string, adminToken: string | undefined): Promise<PinView[]> {
  const res = await call(url, '/admin/pins', 'GET', adminToken);
  if (res.statusCode !== 200) throw new Error(`${url} answered ${res.statusCode}: ${await errorMessage(res.body, res.statusCode)}`);
  return (await res.body.json()) as PinView[];
}

/** `DELETE /admin/pins?ref=REF`: the released pin; its 404 and 400 become the PinError the offline path throws. */
export async function unpinThrough(url: string, ref: string, adminToken: string | undefined): Promise<PinView> {
  const res = await call(url, `/admin/pins?${new URLSearchParams({ ref }).toString()}`, 'DELETE', adminToken);
  if (res.statusCode === 200) return (await res.body.json()) as PinView;
  const message = await errorMessage(res.body, res.statusCode);
  if (res.statusCode === 404) throw new PinError('unknown', message);
  if (res.statusCode === 400) throw new PinError('invalid', message);
  throw new Error(`${url} answered ${res.statusCode}: ${message}`);
}

async function call(url: string, path: string, method: 'GET' | 'DELETE', adminToken: string | undefined): ReturnType<typeof request> {
  try {
    return await request(`${url}${path}`, { method, headers: adminHeaders(adminToken), headersTimeout: TIMEOUT_MS, bodyTimeout: TIMEOUT_MS });
  } catch (err) {
    throw new Error(`cannot reach the running Gantry at ${url} (${(err as Error).message})`);
  }
}
