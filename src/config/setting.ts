/**
 * The shape of one row of the settings table (schema.ts), and the one table-driven parser. Every
 * setting is declared once, as a Setting; the Config type, the defaults, validation, env and flag
 * parsing, the CLI options and the README table are all read off the table.
 */

/** Where secrets referenced by name come from (env vars, files); injectable so parsing stays testable. */
export type SecretSource = { env: NodeJS.ProcessEnv; readFile: (path: string) => string };

export type ParseContext = {
  problems: string[];
  secrets: SecretSource;
  /** The mapping the value was read from, for settings spelled several ways (`passwordEnv`). */
  record: Readonly<Record<string, unknown>>;
};

export type Setting<V> = {
  /** How the type column of the README describes the value, with its bounds. */
  readonly type: string;
  readonly help: string;
  /** Used when the setting is absent. No default and not `required`: the setting is optional. */
  readonly default?: V;
  /** Absent is a problem (upstream host and url). */
  readonly required?: true;
  /** Environment variable that overrides the file (empty means unset). */
  readonly env?: string;
  /** Command-line flag (without `--`) that overrides env and file. */
  readonly flag?: string;
  /** The flag's value in usage lines, e.g. `HOST:PORT`. */
  readonly metavar?: string;
  /** Variables read when neither file nor flag set it (proxy: HTTPS_PROXY and friends). */
  readonly envFallback?: readonly string[];
  /** How the README shows the default, when the value itself says too little. */
  readonly docDefault?: string;
  /** Further keys of the same mapping this setting reads (`passwordEnv`, `passwordFile`). */
  readonly aliases?: readonly string[];
  /** Validate one raw value; report a problem under `key` and return undefined when invalid. */
  readonly parse: (raw: unknown, key: string, ctx: ParseContext) => V | undefined;
};

/** A nested mapping of settings (`auth`, `breaker`, `proxy`). */
export type Section<F extends Fields> = { readonly section: F };

export type Fields = { readonly [key: string]: Setting<unknown> | Section<Fields> };

type Simplify<T> = { [K in keyof T]: T[K] } & {};
type Present<S> = S extends Section<Fields> ? true : S extends { default: unknown } ? true : S extends { required: true } ? true : false;
type ValueOf<S> = S extends Section<infer F> ? ValuesOf<F> : S extends Setting<infer V> ? V : never;

/** The value type of a table: settings with a default (and sections) are always there, the others optional. */
export type ValuesOf<F extends Fields> = Simplify<
  { -readonly [K in keyof F as Present<F[K]> extends true ? K : never]: ValueOf<F[K]> } & {
    -readonly [K in keyof F as Present<F[K]> extends true ? never : K]?: ValueOf<F[K]>;
  }
>;

/** Overrides from env vars and flags, keyed by the setting's dotted key; all optional strings. */
export type Overrides = Readonly<Record<string, string | undefined>>;

export function isSection(s: Setting<unknown> | Section<Fields>): s is Section<Fields> {
  return 'section' in s;
}

export function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Every key a table reads from its mapping: the settings' own and their aliases. */
export function knownKeys(fields: Fields): Set<string> {
  const keys = new Set<string>();
  for (const [name, s] of Object.entries(fields)) {
    keys.add(name);
    if (!isSection(s)) for (const alias of s.aliases ?? []) keys.add(alias);
  }
  return keys;
}

/** Every setting of a table, nested ones with their dotted key (`auth.realm`), in table order. */
export function* walkSettings(fields: Fields, prefix = ''): Generator<[key: string, setting: Setting<unknown>]> {
  for (const [name, s] of Object.entries(fields)) {
    if (isSection(s)) yield* walkSettings(s.section, `${prefix}${name}.`);
    else yield [`${prefix}${name}`, s];
  }
}

/** The defaults of a table, as fresh objects. */
export function defaultsOf<F extends Fields>(fields: F): ValuesOf<F> {
  const out: Record<string, unknown> = {};
  for (const [name, s] of Object.entries(fields)) {
    if (isSection(s)) out[name] = defaultsOf(s.section);
    else if (s.default !== undefined) out[name] = structuredClone(s.default);
  }
  return out as ValuesOf<F>;
}

/**
 * Parse a mapping against its table: unknown keys, then each setting from its override, the
 * mapping, its env fallback or its default. Problems are collected, never thrown, so every one
 * is reported at once.
 */
export function parseFields<F extends Fields>(
  fields: F,
  raw: Readonly<Record<string, unknown>>,
  prefix: string,
  overrides: Overrides,
  ctx: Omit<ParseContext, 'record'>,
): ValuesOf<F> {
  const known = knownKeys(fields);
  for (const k of Object.keys(raw)) if (!known.has(k)) ctx.problems.push(`${prefix}${k}: unknown key`);
  const out: Record<string, unknown> = {};
  for (const [name, s] of Object.entries(fields)) {
    const key = `${prefix}${name}`;
    if (isSection(s)) {
      out[name] = parseFields(s.section, sectionOf(raw[name], key, ctx.problems), `${key}.`, overrides, ctx);
      continue;
    }
    const value = overrides[key] ?? raw[name] ?? fallbackOf(s, ctx.secrets.env);
    const given = value !== undefined || s.required === true || (s.aliases ?? []).some((a) => raw[a] !== undefined);
    const parsed = given ? s.parse(value, key, { ...ctx, record: raw }) : undefined;
    if (parsed !== undefined) out[name] = parsed;
    else if (s.default !== undefined) out[name] = structuredClone(s.default);
  }
  return out as ValuesOf<F>;
}

function sectionOf(raw: unknown, key: string, problems: string[]): Readonly<Record<string, unknown>> {
  if (raw === undefined) return {};
  if (isRecord(raw)) return raw;
  problems.push(`${key}: expected a mapping`);
  return {};
}

function fallbackOf(s: Setting<unknown>, env: NodeJS.ProcessEnv): string | undefined {
  return s.envFallback?.map((n) => env[n]).find((v) => v !== undefined && v !== '');
}
