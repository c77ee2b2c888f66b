import { connect } from 'node:net';

/**
 * Send bytes exactly as written (no URL normalisation, duplicate headers kept)
 * and return the raw response. Bounded by a deadline.
 */
export function rawRequest(url: string, text: string, timeoutMs = 5_000): Promise<{ status: number; head: string; body: string }> {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const sock = connect(Number(u.port), u.hostname);
    const chunks: Buffer[] = [];
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error('raw request timed out'));
    }, timeoutMs);
    sock.on('data', (c: Buffer) => chunks.push(c));
    sock.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    sock.on('close', () => {
      clearTimeout(timer);
      const all = Buffer.concat(chunks).toString('latin1');
      const split = all.indexOf('\r\n\r\n');
      const head = split === -1 ? all : all.slice(0, split);
      resolve({ status: Number(/^HTTP\/1\.1 (\d{3})/.exec(head)?.[1] ?? 0), head, body: split === -1 ? '' : all.slice(split + 4) });
    });
    sock.write(Buffer.from(text, 'latin1'));
  });
}
