// Command-line parsing shared by the bench scripts: each option is either a
// flag or takes one value; anything else is an error that lists the options.

export type Option = { flag: () => void } | { value: (v: string) => void; meta?: string };

export function parseOptions(argv: string[], options: Record<string, Option>): void {
  const usage = () =>
    Object.entries(options)
      .map(([name, o]) => ('flag' in o ? name : `${name} ${o.meta ?? 'VALUE'}`))
      .join(', ');
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const o = options[a];
    if (!o) throw new Error(`unknown argument ${a} (expected ${usage()})`);
    if ('flag' in o) o.flag();
    else {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value`);
      o.value(v);
    }
  }
}

/** An integer option value, at least `min`. */
export function count(v: string, min = 1): number {
  const n = parseInt(v, 10);
  if (!Number.isFinite(n)) throw new Error(`expected an integer, got ${v}`);
  return Math.max(min, n);
}
