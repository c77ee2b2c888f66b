// Whether this host can run the e2e tier. It cannot without root (the engines mount, chown and use
// namespaces) or without the Debian packages it drives. Then the tier fails, naming what is missing:
// it used to skip itself when not root, so a non-root CI passed with no engine test at all.
import { existsSync } from 'node:fs';
import { CONTAINERD, CTR, DOCKER, DOCKERD, PODMAN, SKOPEO } from './engines.ts';

export const REGISTRY = '/usr/bin/docker-registry';
/** Makes the test CA (test/helpers/test-ca.ts) and runs the README's certificate commands. */
export const OPENSSL = '/usr/bin/openssl';

/** The Debian package of each binary the tier runs, as scripts/ensure-system-deps.sh installs them. */
const PACKAGE_OF: Readonly<Record<string, string>> = {
  [REGISTRY]: 'docker-registry',
  [DOCKERD]: 'docker.io',
  [DOCKER]: 'docker.io',
  [CONTAINERD]: 'containerd',
  [CTR]: 'containerd',
  [PODMAN]: 'podman',
  [SKOPEO]: 'skopeo',
  [OPENSSL]: 'openssl',
};

/** Every binary of the tier: what `requireE2eHost()` checks with no argument. */
export const E2E_BINARIES: readonly string[] = Object.keys(PACKAGE_OF);

export type Host = { uid: number | undefined; exists: (path: string) => boolean };

const THIS_HOST: Host = { uid: process.getuid?.(), exists: existsSync };

/** Why `host` cannot run an e2e file that needs `bins` (the origin registry is always needed): one line, or undefined if it can. */
export function e2eHostProblem(bins: readonly string[], host: Host = THIS_HOST): string | undefined {
  const problems: string[] = [];
  if (host.uid !== 0) problems.push(`not root (uid ${host.uid ?? 'unknown'}; the container engines mount, chown and use namespaces)`);
  const absent = [...new Set([REGISTRY, ...bins])].filter((b) => !host.exists(b));
  if (absent.length > 0) problems.push(`not installed: ${absent.map((b) => `${b} (${PACKAGE_OF[b] ?? 'unknown package'})`).join(', ')}`);
  if (problems.length === 0) return undefined;
  return `the e2e tier cannot run on this host: ${problems.join('; ')}. Run it as root after \`bash scripts/ensure-system-deps.sh\` (npm test does that first).`;
}

/** Throw, with what is missing, unless this host can run an e2e file that needs `bins`: the file then fails instead of skipping. */
export function requireE2eHost(...bins: string[]): void {
  const problem = e2eHostProblem(bins.length > 0 ? bins : E2E_BINARIES);
  if (problem !== undefined) throw new Error(problem);
}
