import { RegistryError } from '../oci/errors.ts';

/** Read a response body into memory, refusing more than `maxBytes` (manifests, error bodies). */
export async function readBounded(body: AsyncIterable<Uint8Array> & { destroy?: () => unknown }, maxBytes: number): Promise<Buffer> {
  const chunks: Uint8Array[] = [];
  let total = 0;
  for await (const chunk of body) {
    total += chunk.length;
    if (total > maxBytes) {
      body.destroy?.();
      throw new RegistryError('MANIFEST_INVALID', { message: `upstream response larger than ${maxBytes} bytes` });
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks, total);
}

/** Best-effort text of a small error body; never throws. */
export async function readErrorText(body: AsyncIterable<Uint8Array> & { destroy?: () => unknown }): Promise<string> {
  try {
    return (await readBounded(body, 64 * 1024)).toString('utf8');
  } catch {
    return '';
  }
}
