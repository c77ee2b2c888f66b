import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { listenOnLoopback } from './loopback.ts';

export type SeenRequest = { method: string; url: string; headers: IncomingMessage['headers'] };
export type Handler = (req: IncomingMessage, res: ServerResponse) => void | Promise<void>;

/**
 * A hand-written upstream for behaviour the real registry will not produce on
 * demand (wrong bytes, 429s, redirects, token realms). Records every request.
 */
export async function startFakeUpstream(handler: Handler): Promise<{ url: string; seen: SeenRequest[]; stop(): Promise<void> }> {
  const seen: SeenRequest[] = [];
  const server = createServer((req, res) => {
    seen.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers });
    Promise.resolve(handler(req, res)).catch((err: unknown) => {
      res.destroy(err as Error);
    });
  });
  const port = await listenOnLoopback(server);
  return {
    url: `http://127.0.0.1:${port}`,
    seen,
    stop: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}
