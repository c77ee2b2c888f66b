import http from 'node:http';
import { closeWithin, listenOnLoopback } from './loopback.ts';

/**
 * An upstream with the OCI 1.1 referrers API, which Debian's Distribution 2.8 lacks: everything
 * is forwarded to `target` (a real registry) except `GET /v2/<name>/referrers/<digest>`, answered
 * from `index` (subject digest -> its referrers' descriptors), with `artifactType` applied as the
 * spec says a registry may. Counts the referrers requests it answered.
 */
export type ReferrersUpstream = { url: string; referrersAsked: () => number; stop(): Promise<void> };

export async function startReferrersUpstream(target: string, index: ReadonlyMap<string, ReadonlyArray<Record<string, unknown>>>): Promise<ReferrersUpstream> {
  const to = new URL(target);
  let asked = 0;
  const agent = new http.Agent({ keepAlive: true });
  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    const m = /^\/v2\/(.+)\/referrers\/(sha256:[a-f0-9]{64})$/.exec(url.pathname);
    if (m && req.method === 'GET') {
      asked += 1;
      const type = url.searchParams.get('artifactType');
      const all = index.get(m[2] ?? '') ?? [];
      const manifests = type ? all.filter((d) => d['artifactType'] === type) : all;
      res.writeHead(200, { 'content-type': 'application/vnd.oci.image.index.v1+json', ...(type ? { 'oci-filters-applied': 'artifactType' } : {}) });
      res.end(JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests }));
      return;
    }
    const up = http.request({ agent, hostname: to.hostname, port: to.port, method: req.method, path: req.url, headers: { ...req.headers, host: to.host } }, (upRes) => {
      res.writeHead(upRes.statusCode ?? 502, upRes.headers);
      upRes.pipe(res);
    });
    up.on('error', () => res.destroy());
    req.pipe(up);
  });
  const port = await listenOnLoopback(server);
  return {
    url: `http://127.0.0.1:${port}`,
    referrersAsked: () => asked,
    stop: () => closeWithin(server, 'referrers-upstream', () => {
      server.closeAllConnections();
      agent.destroy();
    }),
  };
}
