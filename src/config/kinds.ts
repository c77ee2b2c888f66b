import type { ParseContext, Setting } from './setting.ts';

/**
 * The kinds of value a setting can hold. Each builder takes the row's declaration (help, default,
 * env, flag, bounds) and adds the parser and the type shown in the README, so a kind's messages
 * read the same for every setting of that kind.
 */

type Declared<V> = Omit<Setting<V>, 'parse' | 'type'>;

const SIZE_UNITS: Record<string, number> = {
  '': 1, b: 1, k: 1e3, kb: 1e3, m: 1e6, mb: 1e6, g: 1e9, gb: 1e9, t: 1e12, tb: 1e12,
  kib: 2 ** 10, mib: 2 ** 20, gib: 2 ** 30, tib: 2 ** 40,
};

/** Parse `10GiB`, `500MB`, `1234` into bytes; undefined when malformed. */
export function parseSize(v: unknown): number | undefined {
  if (typeof v === 'number') return Number.isSafeInteger(v) && v >= 0 ? v : undefined;
  if (typeof v !== 'string') return undefined;
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(v);
  const unit = SIZE_UNITS[(m?.[2] ?? '').toLowerCase()];
  if (!m || unit === undefined) return undefined;
  return Math.floor(Number(m[1]) * unit);
}

/** `1073741824` → `1GiB`: the shortest exact binary spelling, for messages and the README. */
export function formatSize(bytes: number): string {
  for (const [unit, n] of [['TiB', 2 ** 40], ['GiB', 2 ** 30], ['MiB', 2 ** 20], ['KiB', 2 ** 10]] as const) {
    if (bytes >= n && bytes % n === 0) return `${bytes / n}${unit}`;
  }
  return String(bytes);
}

/** Parse `host:port`, `:port` or `[v6]:port`. */
export function parseListen(v: unknown): { host: string; port: number } | undefined {
  if (typeof v !== 'string') return undefined;
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d{1,5})$/.exec(v.trim());
  if (!m) return undefined;
  const port = Number(m[3]);
  if (port > 65535) return undefined;
  return { host: m[1] ?? (m[2] || '0.0.0.0'), port };
}

/** An integer (YAML number, or a string of digits from env or flags) of at least `min`. */
export function int<O extends Declared<number> & { min: number; max?: number }>(o: O): O & Setting<number> {
  return {
    metavar: 'N',
    ...o,
    type: o.max === undefined ? `integer ≥ ${o.min}` : `integer ${o.min}–${o.max}`,
    parse(v, key, { problems }) {
      const n = typeof v === 'string' && /^\d+$/.test(v.trim()) ? Number(v) : v;
      if (typeof n !== 'number' || !Number.isSafeInteger(n) || n < o.min) {
        problems.push(`${key}: expected an integer >= ${o.min}, got ${JSON.stringify(v)}`);
        return undefined;
      }
      if (o.max !== undefined && n > o.max) problems.push(`${key}: expected at most ${o.max}`);
      return n;
    },
  };
}

/** An integer from `min` to `max`, or `auto` (the program picks, e.g. from the machine). */
export function intOrAuto<O extends Declared<number | 'auto'> & { min: number; max: number }>(o: O): O & Setting<number | 'auto'> {
  return {
    metavar: 'N',
    ...o,
    type: `\`auto\` or integer ${o.min}–${o.max}`,
    parse(v, key, { problems }) {
      if (v === 'auto') return v;
      const n = typeof v === 'string' && /^\d+$/.test(v.trim()) ? Number(v) : v;
      if (typeof n !== 'number' || !Number.isSafeInteger(n) || n < o.min || n > o.max) {
        problems.push(`${key}: expected auto or an integer from ${o.min} to ${o.max}, got ${JSON.stringify(v)}`);
        return undefined;
      }
      return n;
    },
  };
}

/** A byte count: `50GiB`, `500MB` or a plain number. */
export function size<O extends Declared<number> & { min?: number }>(o: O): O & Setting<number> {
  const min = o.min ?? 0;
  return {
    metavar: 'SIZE',
    docDefault: o.default === undefined ? undefined : `\`${formatSize(o.default)}\``,
    ...o,
    type: min > 0 ? `size ≥ ${formatSize(min)}` : 'size',
    parse(v, key, { problems }) {
      const n = parseSize(v);
      if (n === undefined) problems.push(`${key}: expected a size such as 50GiB or 1000000, got ${JSON.stringify(v)}`);
      else if (n < min) problems.push(`${key}: expected a size of at least ${formatSize(min)}, got ${JSON.stringify(v)}`);
      else return n;
      return undefined;
    },
  };
}

export function bool<O extends Declared<boolean>>(o: O): O & Setting<boolean> {
  return {
    ...o,
    type: '`true` / `false`',
    parse(v, key, { problems }) {
      if (typeof v === 'boolean') return v;
      // From an environment variable or a flag.
      if (v === 'true' || v === 'false') return v === 'true';
      problems.push(`${key}: expected true or false`);
      return undefined;
    },
  };
}

type TextOptions = {
  /** Accept `''` (a username may be empty). */
  allowEmpty?: boolean;
  lowercase?: boolean;
  pattern?: RegExp;
  /** What the message says was expected, after "expected ". */
  expected?: string;
  /** The README's type column. */
  typeName?: string;
};

/** A string, optionally lowercased and checked against a pattern. */
export function text<O extends Declared<string> & TextOptions>(o: O): O & Setting<string> {
  return {
    ...o,
    type: o.typeName ?? 'string',
    parse(v, key, { problems }) {
      const ok = typeof v === 'string' && (o.allowEmpty === true || v.length > 0) && (o.pattern?.test(v) ?? true);
      if (!ok) {
        problems.push(`${key}: expected ${o.expected ?? 'a string'}`);
        return undefined;
      }
      return o.lowercase ? v.toLowerCase() : v;
    },
  };
}

export function path<O extends Declared<string>>(o: O): O & Setting<string> {
  return text({ metavar: 'PATH', ...o, expected: 'a non-empty path', typeName: 'path' });
}

export function listen<O extends Declared<{ host: string; port: number }>>(o: O): O & Setting<{ host: string; port: number }> {
  return {
    metavar: 'HOST:PORT',
    ...o,
    type: '`host:port`',
    parse(v, key, { problems }) {
      const l = parseListen(v);
      if (!l) problems.push(`${key}: expected host:port, got ${JSON.stringify(v)}`);
      return l;
    },
  };
}

export function oneOf<const T extends string, O extends Declared<T>>(values: readonly T[], o: O): O & Setting<T> {
  return {
    ...o,
    type: `one of ${values.map((v) => `\`${v}\``).join(', ')}`,
    parse(v, key, { problems }) {
      if ((values as readonly unknown[]).includes(v)) return v as T;
      problems.push(`${key}: expected one of ${values.join(', ')}`);
      return undefined;
    },
  };
}

/** An http(s) URL without credentials in it, normalised to origin + path without trailing slashes. */
export function url<O extends Declared<string>>(o: O): O & Setting<string> {
  return { metavar: 'URL', ...o, type: 'http(s) URL', parse: (v, key, ctx) => parseUrl(v, key, ctx) };
}

function parseUrl(v: unknown, key: string, { problems }: ParseContext): string | undefined {
  if (typeof v !== 'string') {
    problems.push(`${key}: expected an http(s) URL`);
    return undefined;
  }
  try {
    const u = new URL(v);
    if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new Error('scheme');
    if (u.username || u.password) {
      problems.push(`${key}: credentials in the URL are not allowed; use username/password`);
      return undefined;
    }
    return u.origin + u.pathname.replace(/\/+$/, '');
  } catch {
    problems.push(`${key}: expected an http(s) URL, got ${JSON.stringify(v)}`);
    return undefined;
  }
}

/** A list of non-empty strings, optionally lowercased (host names), each matching `pattern` when given. */
export function stringList<O extends Declared<string[]> & { lowercase?: boolean; pattern?: RegExp; expected?: string }>(o: O): O & Setting<string[]> {
  return {
    ...o,
    type: 'list of strings',
    parse(v, key, { problems }) {
      if (!Array.isArray(v) || !v.every((x): x is string => typeof x === 'string' && x.length > 0)) {
        problems.push(`${key}: expected a list of strings`);
        return undefined;
      }
      const bad = o.pattern ? v.find((x) => !o.pattern?.test(x)) : undefined;
      if (bad !== undefined) {
        problems.push(`${key}: ${JSON.stringify(bad.slice(0, 140))} is not ${o.expected ?? 'valid'}`);
        return undefined;
      }
      return o.lowercase ? v.map((h) => h.toLowerCase()) : [...v];
    },
  };
}
