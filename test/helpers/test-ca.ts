import { execFile } from 'node:child_process';
import { mkdir, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';

const execFileP = promisify(execFile);

/** A CA made with the openssl CLI, by the steps of the README's HTTPS section (test/e2e/https.test.ts runs its commands as written). */
export type TestCa = { dir: string; certFile: string; keyFile: string };
export type Leaf = { certFile: string; keyFile: string; serial: string };

async function openssl(args: string[], cwd: string): Promise<string> {
  try {
    return (await execFileP('openssl', args, { cwd, timeout: 30_000 })).stdout;
  } catch (err) {
    throw new Error(`openssl ${args[0]} failed (apt-get install openssl): ${(err as Error).message}`, { cause: err });
  }
}

export async function makeCa(dir: string, name = 'Gantry test CA'): Promise<TestCa> {
  await mkdir(dir, { recursive: true });
  await openssl(['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', `/CN=${name}`, '-keyout', 'ca.key', '-out', 'ca.crt'], dir);
  return { dir, certFile: join(dir, 'ca.crt'), keyFile: join(dir, 'ca.key') };
}

/**
 * A server certificate signed by `ca` for `sans` (`IP:127.0.0.1`, `DNS:gantry.test`), written as
 * `<name>.crt` / `<name>.key`. With `into`, the pair then replaces those files by rename, as
 * cert-manager and certbot do.
 */
export async function issue(ca: TestCa, name: string, sans: string[], into?: { certFile: string; keyFile: string }): Promise<Leaf> {
  const ext = join(ca.dir, `${name}.ext`);
  await writeFile(ext, `subjectAltName=${sans.join(',')}\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n`);
  await openssl(['req', '-newkey', 'rsa:2048', '-nodes', '-subj', `/CN=${name}`, '-keyout', `${name}.key`, '-out', `${name}.csr`], ca.dir);
  await openssl(['x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-days', '2', '-extfile', ext, '-out', `${name}.crt`], ca.dir);
  const serial = (await openssl(['x509', '-in', `${name}.crt`, '-noout', '-serial'], ca.dir)).trim().replace(/^serial=/, '');
  const made = { certFile: join(ca.dir, `${name}.crt`), keyFile: join(ca.dir, `${name}.key`) };
  if (!into) return { ...made, serial };
  await rename(made.keyFile, into.keyFile);
  await rename(made.certFile, into.certFile);
  return { ...into, serial };
}
