import type { Hono } from 'hono';
import { RegistryError } from '../oci/errors.ts';
import type { UpstreamNames } from '../transfer/image-location.ts';
import { listPins, PinError, releasePin, type PinCache } from '../transfer/pins.ts';
import type { AppEnv } from './app-env.ts';

export type PinsRouteServices = {
  /** The cache whose pins `/admin/pins` lists and releases; absent, the routes are not served. */
  pinSource?: { cache: PinCache; config: UpstreamNames };
};

/**
 * `GET /admin/pins`: every pin (transfer/pins.ts PinView), what `gantry pins` prints while this
 * Gantry holds the cache. `DELETE /admin/pins?ref=REF`: release one pin, answering with it as it
 * was; a ref that names no pin is a 404 and one that does not parse a 400, both naming it.
 */
export function registerPinsRoute(app: Hono<AppEnv>, svc: PinsRouteServices): void {
  const source = svc.pinSource;
  if (!source) return;
  // Mounted on the admin sub-app: its guard (loopback, admin token) has run.
  app.get('/pins', (c) => c.json(listPins(source.cache)));
  app.delete('/pins', async (c) => {
    const ref = c.req.query('ref');
    if (ref === undefined || ref === '') throw new RegistryError('NAME_INVALID', { status: 400, message: 'unpin: give the pinned image as ref=REF' });
    try {
      return c.json(await releasePin(ref, source.cache, source.config));
    } catch (err) {
      if (!(err instanceof PinError)) throw err;
      throw err.kind === 'invalid' ? new RegistryError('NAME_INVALID', { status: 400, message: err.message }) : new RegistryError('MANIFEST_UNKNOWN', { message: err.message });
    }
  });
}
