// The import structure of the source tree, from every .ts file's imports
// (static, re-exports, dynamic and `typeof import(...)`, type-only included):
//   - layering grammar → compiler → runtime → bin: a file imports only its own
//     layer and lower ones (the compiler never reaches into the runtime, the
//     grammar into neither);
//   - no import cycle between compiler/passes and compiler/codegen (codegen
//     renders the groups fusion makes; fusion reads op classes from the op
//     table, never from codegen);
//   - no Node built-in in runtime/ outside runtime/platform/: the runtime runs
//     in browsers too, and only the platform modules may assume Node
//     (scripts/bundle-browser.ts checks the browser bundle; this checks every file).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { readFileSync, readdirSync } from 'node:fs';
import { builtinModules } from 'node:module';
import path from 'node:path';

const ROOT = path.resolve(import.meta.dirname, '../..');
const LAYERS = ['grammar', 'compiler', 'runtime', 'bin'] as const;

/** Module specifiers a TypeScript source imports. */
export function importsOf(text: string): string[] {
  const specs: string[] = [];
  const patterns = [
    /(?:^|[;}\s])(?:import|export)\s[^'"`;]*?\sfrom\s*['"]([^'"]+)['"]/g, // import/export ... from '...' (multi-line braces too)
    /(?:^|[;\s])import\s*['"]([^'"]+)['"]/g, // import '...' (side effect)
    /\bimport\s*\(\s*['"]([^'"]+)['"]\s*\)/g, // import('...'), typeof import('...')
  ];
  for (const re of patterns) for (const m of text.matchAll(re)) specs.push(m[1]);
  return specs;
}

function sourceFiles(dir: string): string[] {
  return readdirSync(path.join(ROOT, dir), { recursive: true, encoding: 'utf8' })
    .filter((f) => f.endsWith('.ts'))
    .map((f) => path.join(dir, f).split(path.sep).join('/'));
}

interface Edge {
  from: string; // repo-relative file
  spec: string; // as written
  to?: string; // repo-relative file, for relative specifiers
}

function edges(): Edge[] {
  const out: Edge[] = [];
  for (const file of LAYERS.flatMap(sourceFiles))
    for (const spec of importsOf(readFileSync(path.join(ROOT, file), 'utf8'))) {
      const to = spec.startsWith('.') ? path.posix.normalize(path.posix.join(path.posix.dirname(file), spec)) : undefined;
      out.push({ from: file, spec, to });
    }
  return out;
}

const layerOf = (file: string) => LAYERS.indexOf(file.split('/')[0] as (typeof LAYERS)[number]);
const show = (e: Edge) => `${e.from}: import '${e.spec}'`;

test('the import scanner sees static, multi-line, re-exported, side-effect and dynamic imports', () => {
  const text = `import { a,\n  b } from './x.ts';\nimport type { T } from "../y.ts";\nexport { c } from './z.ts';\nimport 'side';\nconst m = await import('./dyn.ts');\nlet t: typeof import('../t.ts');\n// a comment mentioning import words\nconst s = \`import(\${x})\`;`;
  assert.equal(importsOf(text).sort(), ['../t.ts', '../y.ts', './dyn.ts', './x.ts', './z.ts', 'side'].sort());
});

test('grammar → compiler → runtime → bin: no file imports a higher layer', () => {
  const all = edges();
  assert.ok(all.length > 200, `found only ${all.length} imports`);
  const bad = all
    .filter((e) => e.to && layerOf(e.to) > layerOf(e.from))
    .map((e) => `${show(e)} (${LAYERS[layerOf(e.from)]} imports ${LAYERS[layerOf(e.to!)]})`);
  assert.equal(bad, [], `imports against the layering:\n${bad.join('\n')}`);
});

test('no import cycle between compiler/passes and compiler/codegen', () => {
  const graph = new Map<string, Edge[]>();
  for (const e of edges()) if (e.to?.startsWith('compiler/')) graph.set(e.from, [...(graph.get(e.from) ?? []), e]);
  /** An import chain from a file under `a` to a file under `b`, if any. */
  const chain = (a: string, b: string): Edge[] | undefined => {
    const seen = new Set<string>();
    const walk = (file: string, path: Edge[]): Edge[] | undefined => {
      if (seen.has(file)) return undefined;
      seen.add(file);
      for (const e of graph.get(file) ?? []) {
        if (e.to!.startsWith(b)) return [...path, e];
        const found = walk(e.to!, [...path, e]);
        if (found) return found;
      }
      return undefined;
    };
    for (const file of graph.keys())
      if (file.startsWith(a)) {
        const found = walk(file, []);
        if (found) return found;
      }
    return undefined;
  };
  const there = chain('compiler/passes/', 'compiler/codegen/');
  const back = chain('compiler/codegen/', 'compiler/passes/');
  if (there && back)
    assert.unreachable(`compiler/passes and compiler/codegen import each other:\n  ${there.map(show).join('\n  ')}\nand\n  ${back.map(show).join('\n  ')}`);
});

test('Node built-ins are imported in runtime/ only under runtime/platform/', () => {
  const builtins = new Set(builtinModules);
  const bad = edges()
    .filter((e) => e.from.startsWith('runtime/') && !e.from.startsWith('runtime/platform/'))
    .filter((e) => e.spec.startsWith('node:') || builtins.has(e.spec.split('/')[0]))
    .map(show);
  assert.equal(bad, [], `Node-only imports outside runtime/platform/:\n${bad.join('\n')}`);
});

test.run();
