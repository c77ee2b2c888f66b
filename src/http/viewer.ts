import { createHash, timingSafeEqual } from 'node:crypto';
import type { Context } from 'hono';
import type { AppEnv } from './app-env.ts';
import { clientAddress } from './accel.ts';

/** The settings that say who the admin is (config `adminRemote`, `adminToken`). */
export type AdminAccess = { adminRemote: boolean; adminToken: string | undefined };

/** What a request shows of its sender: its address and its Authorization header. */
export type Viewer = { remote: string; authorization: string | undefined };

const LOOPBACK = /^(127\.|::1$|::ffff:127\.)/;

/** The admin's network rule: loopback clients, or anyone with adminRemote. */
export function adminNetworkAllows(remote: string, access: Pick<AdminAccess, 'adminRemote'>): boolean {
  return access.adminRemote || LOOPBACK.test(remote);
}

/** Whether `Authorization: Bearer <token>` carries the admin token; hashes compared, so the time taken says nothing of the token. */
export function bearerIsAdminToken(authorization: string | undefined, adminToken: string): boolean {
  const m = /^Bearer\s+(\S+)\s*$/i.exec(authorization ?? '');
  return timingSafeEqual(sha256(m?.[1] ?? ''), sha256(adminToken)) && m !== null;
}

/**
 * Whether a request comes from the admin: one that passes the admin guard's network rule and,
 * when `adminToken` is set, carries it as `Authorization: Bearer <adminToken>`.
 *
 * `requireToken` is for pages outside `/admin` (the registry catalog, a status page): there,
 * loopback alone is not enough and only the token makes the admin. Such pages sit where
 * operators forward everything through a reverse proxy, and behind a proxy on the same host every
 * client is loopback; a proxy that forwards `/v2/` and keeps `/admin` closed must not hand out
 * what only the admin may see. Without a token configured, nobody is the admin there.
 *
 * @example isAdminViewer({ remote: '127.0.0.1', authorization: 'Bearer s3cret' }, { adminRemote: false, adminToken: 's3cret' }, { requireToken: true }) // true
 */
export function isAdminViewer(viewer: Viewer, access: AdminAccess, opts: { requireToken: boolean }): boolean {
  if (!adminNetworkAllows(viewer.remote, access)) return false;
  if (access.adminToken === undefined) return !opts.requireToken;
  return bearerIsAdminToken(viewer.authorization, access.adminToken);
}

/** The viewer of a request: the client's own address also when a serving process forwarded it. */
export function viewerOf(c: Context<AppEnv>): Viewer {
  return { remote: clientAddress(c.env.incoming), authorization: c.req.header('authorization') };
}

function sha256(s: string): Buffer {
  return createHash('sha256').update(s).digest();
}
