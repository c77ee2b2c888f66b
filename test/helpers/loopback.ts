import type { Server } from 'node:net';

/** Listen on 127.0.0.1, on a port the kernel picks (never a guessed one); resolves with that port. */
export function listenOnLoopback(server: Server): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host: '127.0.0.1', port: 0 }, () => {
      server.off('error', reject);
      const addr = server.address();
      if (addr === null || typeof addr === 'string') reject(new Error(`unexpected server address ${String(addr)}`));
      else resolve(addr.port);
    });
  });
}

/**
 * Close `server` once `dropConnections` has ended what is still open (close() alone waits for
 * keep-alive clients); rejects, naming `name`, if it has not closed within `ms`, so an after()
 * hook cannot hang on it.
 */
export function closeWithin(server: Server, name: string, dropConnections: () => void, ms = 5000): Promise<void> {
  return new Promise<void>((done, fail) => {
    const deadline = setTimeout(() => fail(new Error(`${name}: server did not close within ${ms / 1000} s`)), ms);
    server.close(() => {
      clearTimeout(deadline);
      done();
    });
    dropConnections();
  });
}
