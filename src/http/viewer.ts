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
 * Whether a request comes from the admin, by the `/admin` rule: it passes the network rule and,
 * when `adminToken` is set, carries it as `Authorization: Bearer <adminToken>`. Pages outside
 * `/admin` (the registry catalog, the status page) use it to decide who sees restricted content.
 *
 * @example isAdminViewer({ remote: '127.0.0.1', authorization: 'Bearer s3cret' }, { adminRemote: false, adminToken: 's3cret' }) // true
 */
export function isAdminViewer(viewer: Viewer, access: AdminAccess): boolean {
  if (!adminNetworkAllows(viewer.remote, access)) return false;
  return access.adminToken === undefined || bearerIsAdminToken(viewer.authorization, access.adminToken);
}

/** The viewer of a request: the client's own address also when a serving process forwarded it. */
export function viewerOf(c: Context<AppEnv>): Viewer {
  return { remote: clientAddress(c.env.incoming), authorization: c.req.header('authorization') };
}

function sha256(s: string): Buffer {
  return createHash('sha256').update(s).digest();
}
