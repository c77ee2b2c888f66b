import { readFileSync } from 'node:fs';
import bcrypt from 'bcryptjs';

/**
 * htpasswd users for optional client authentication. Only bcrypt entries
 * (`htpasswd -B`) are accepted: the other htpasswd formats are too weak for
 * a mirror on a routable network.
 */
export class Htpasswd {
  private readonly users: Map<string, string>;

  constructor(users: Map<string, string>) {
    this.users = users;
  }

  static load(path: string): Htpasswd {
    const users = new Map<string, string>();
    const lines = readFileSync(path, 'utf8').split(/\r?\n/);
    lines.forEach((line, i) => {
      if (line.trim() === '' || line.startsWith('#')) return;
      const colon = line.indexOf(':');
      const hash = line.slice(colon + 1).trim();
      if (colon <= 0 || !/^\$2[aby]\$\d\d\$/.test(hash)) throw new Error(`${path}:${i + 1}: not a bcrypt htpasswd entry`);
      users.set(line.slice(0, colon), hash);
    });
    return new Htpasswd(users);
  }

  async verify(username: string, password: string): Promise<boolean> {
    const hash = this.users.get(username);
    // Compare against a dummy hash for unknown users so timing doesn't reveal which names exist.
    const ok = await bcrypt.compare(password, hash ?? DUMMY_HASH);
    return ok && hash !== undefined;
  }
}

const DUMMY_HASH = '$2b$10$rGWg7VPudIYSf0dARp72fepwSRLAvBwBuX8XV8Hb.iSMqbc5mWxEO';
