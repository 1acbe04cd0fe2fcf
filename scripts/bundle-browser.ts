// Bundles the lovt runtime for browsers: runtime/index.ts (the platform-neutral
// public API) plus runtime/platform/browser.ts (navigator.gpu) into ONE ES
// module, dist/lovt-browser.js by default.
//
// The bundle doubles as the proof that runtime/ stays platform-neutral: it
// fails, naming the import chain, when anything it pulls in imports a Node
// builtin (node:fs, path, ...), Dawn's `webgpu` package or one of the
// Node-only platform modules (runtime/platform/node*.ts).
//
//   node --import tsx scripts/bundle-browser.ts [--out FILE] [--app ENTRY --app-out FILE] [--check-all]
//
// --app bundles an application module (e.g. examples/browser/main.ts) that
// imports the runtime through runtime/index.ts / runtime/platform/browser.ts:
// those imports are rewritten to the runtime bundle's URL (--runtime-url,
// default ./lovt-browser.js) instead of being bundled again.
// --check-all bundles every runtime module (platform/node* excepted) the same
// way, to catch a Node-only import in a module runtime/index.ts does not use yet.

import { builtinModules } from 'node:module';
import { readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import * as esbuild from 'esbuild';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const RUNTIME_ENTRY = path.join(ROOT, 'runtime/index.ts');
export const BROWSER_PLATFORM = path.join(ROOT, 'runtime/platform/browser.ts');
export const DEFAULT_OUT = path.join(ROOT, 'dist/lovt-browser.js');
/** Name of the generated two-line entry module of the runtime bundle. */
const STDIN_ENTRY = 'lovt-browser-entry.ts';

/** Packages that only work under Node (native addons); bare builtins are added below. */
const NODE_ONLY_PACKAGES = new Set(['webgpu']);
const NODE_BUILTINS = new Set(builtinModules.flatMap((m) => [m, m.replace(/^node:/, '')]));

const isNodePlatformModule = (file: string) => /[\\/]runtime[\\/]platform[\\/]node[^\\/]*\.ts$/.test(file);

function nodeOnlyReason(spec: string, resolvedPath?: string): string | undefined {
  if (spec.startsWith('node:')) return 'a Node builtin';
  const pkg = spec.startsWith('@') ? spec.split('/').slice(0, 2).join('/') : spec.split('/')[0];
  if (NODE_BUILTINS.has(pkg)) return 'a Node builtin';
  if (NODE_ONLY_PACKAGES.has(pkg)) return 'a Node-only package (native addon)';
  if (resolvedPath && isNodePlatformModule(resolvedPath)) return 'a Node-only platform module';
  return undefined;
}

const rel = (p: string) => (path.isAbsolute(p) ? path.relative(ROOT, p) : p);

/**
 * An esbuild plugin that records who imports whom and turns every Node-only
 * import into a build error showing the chain from the entry point.
 */
function platformNeutralGuard(): esbuild.Plugin {
  return {
    name: 'lovt-platform-neutral',
    setup(build) {
      const importedBy = new Map<string, string>();
      const chain = (file: string): string => {
        const links = [rel(file)];
        for (let f = importedBy.get(file); f && links.length < 30; f = importedBy.get(f)) links.unshift(rel(f));
        return links.join(' -> ');
      };
      build.onResolve({ filter: /.*/ }, async (args) => {
        if (args.pluginData?.guarded) return undefined;
        let reason = nodeOnlyReason(args.path);
        let resolved: string | undefined;
        if (!reason && args.kind !== 'entry-point') {
          const r = await build.resolve(args.path, { kind: args.kind, importer: args.importer, resolveDir: args.resolveDir, pluginData: { guarded: true } });
          if (r.errors.length === 0 && !r.external) {
            resolved = r.path;
            reason = nodeOnlyReason(args.path, r.path);
            if (!reason && r.path && !importedBy.has(r.path)) importedBy.set(r.path, args.importer);
          }
          if (!reason) return r.errors.length ? undefined : r;
        }
        if (!reason) return undefined;
        return {
          errors: [
            {
              text:
                `'${args.path}' is ${reason}, but the browser bundle must stay platform-neutral. ` +
                `Import chain: ${chain(args.importer)} -> ${resolved ? rel(resolved) : args.path}. ` +
                'Move Node-only code to runtime/platform/node*.ts or bin/, and pass what it provides in as an argument or an interface (see runtime/data/fs.ts).',
            },
          ],
        };
      });
    },
  };
}

/** Rewrites imports of the runtime's public entry points to the runtime bundle's URL (for app bundles). */
function runtimeAsExternal(runtimeUrl: string): esbuild.Plugin {
  const entries = new Set([RUNTIME_ENTRY, BROWSER_PLATFORM]);
  return {
    name: 'lovt-runtime-external',
    setup(build) {
      build.onResolve({ filter: /(^|[\\/])(index|browser)\.ts$/ }, (args) => {
        const abs = path.resolve(args.resolveDir, args.path);
        return entries.has(abs) ? { path: runtimeUrl, external: true } : undefined;
      });
    },
  };
}

/** Free Node globals that esbuild leaves alone and a browser does not define. */
const NODE_GLOBAL_USE =
  /(?<![\w$.'"`])(process\.(?:env|argv|exit|cwd|platform|versions|stdout|stderr)|Buffer\.(?:from|alloc|concat|isBuffer)|__dirname|__filename|require\()/;

/**
 * Fails when one of our own bundled sources uses a Node global (a bare
 * `process.env`, `Buffer.from`, ...), which bundles fine but throws in a
 * browser. Dependencies are not checked this way: they guard such uses
 * themselves (jpeg-js: `btoa || Buffer...`). Comments are stripped first by
 * transforming each file alone.
 */
async function checkNoNodeGlobals(files: string[]): Promise<void> {
  const { readFile } = await import('node:fs/promises');
  for (const file of files) {
    const abs = path.resolve(ROOT, file);
    const { code } = await esbuild.transform(await readFile(abs, 'utf8'), { loader: 'ts', legalComments: 'none' });
    const m = NODE_GLOBAL_USE.exec(code);
    if (m) {
      const line = code
        .slice(code.lastIndexOf('\n', m.index) + 1)
        .split('\n')[0]
        .trim();
      throw new Error(`browser bundle failed: ${rel(abs)} uses the Node global '${m[1]}', which browsers do not define: ${line}`);
    }
  }
}

export interface BundleResult {
  /** The ES module's text. */
  code: string;
  /** Every source file in the bundle, relative to the repository root. */
  modules: string[];
  /** Where it was written (absent with write: false). */
  outfile?: string;
}

async function bundle(
  entry: { contents: string; resolveDir: string; sourcefile: string } | string,
  plugins: esbuild.Plugin[],
  outfile: string | undefined,
  minify: boolean,
): Promise<BundleResult> {
  let result: esbuild.BuildResult<{ write: false; metafile: true }>;
  try {
    result = await esbuild.build({
      ...(typeof entry === 'string' ? { entryPoints: [entry] } : { stdin: { ...entry, loader: 'ts' } }),
      bundle: true,
      format: 'esm',
      platform: 'browser',
      target: 'es2022',
      write: false,
      metafile: true,
      minify,
      sourcemap: false,
      logLevel: 'silent',
      legalComments: 'none',
      plugins: [platformNeutralGuard(), ...plugins],
      ...(outfile ? { outfile } : { outdir: ROOT }),
    });
  } catch (e) {
    const errors = (e as { errors?: esbuild.Message[] }).errors;
    if (!errors?.length) throw e;
    const where = (m: esbuild.Message) => (m.location ? `${m.location.file}:${m.location.line}:${m.location.column + 1}: ` : '');
    throw new Error(`browser bundle failed:\n${errors.map((m) => `  ${where(m)}${m.text}`).join('\n')}`);
  }
  const code = result.outputFiles[0].text;
  const inputs = Object.keys(result.metafile.inputs);
  await checkNoNodeGlobals(inputs.filter((p) => !/\bnode_modules[\\/]/.test(p) && p !== STDIN_ENTRY));
  const modules = inputs.map((p) => p.replace(/^.*\bnode_modules[\\/]/, 'node_modules/'));
  if (outfile) {
    const { mkdir, writeFile } = await import('node:fs/promises');
    await mkdir(path.dirname(outfile), { recursive: true });
    await writeFile(outfile, code);
  }
  return { code, modules, outfile };
}

/** The runtime bundle: runtime/index.ts and runtime/platform/browser.ts in one ES module. */
export function bundleRuntime(opts: { outfile?: string; minify?: boolean } = {}): Promise<BundleResult> {
  const contents = `export * from ${JSON.stringify(pathToFileURL(RUNTIME_ENTRY).pathname)};\nexport * from ${JSON.stringify(pathToFileURL(BROWSER_PLATFORM).pathname)};\n`;
  return bundle({ contents, resolveDir: ROOT, sourcefile: STDIN_ENTRY }, [], opts.outfile, opts.minify ?? false);
}

/**
 * An application bundle: `entry` and everything it imports, except the
 * runtime's public entry points, which stay imports of `runtimeUrl`.
 */
export function bundleApp(entry: string, opts: { runtimeUrl?: string; outfile?: string; minify?: boolean } = {}): Promise<BundleResult> {
  return bundle(path.resolve(entry), [runtimeAsExternal(opts.runtimeUrl ?? './lovt-browser.js')], opts.outfile, opts.minify ?? false);
}

/** Every runtime module except the Node platform modules. */
export function platformNeutralRuntimeModules(): string[] {
  const out: string[] = [];
  const walk = (dir: string) => {
    for (const name of readdirSync(dir).sort()) {
      const p = path.join(dir, name);
      if (statSync(p).isDirectory()) walk(p);
      else if (name.endsWith('.ts') && !name.endsWith('.d.ts') && !isNodePlatformModule(p)) out.push(p);
    }
  };
  walk(path.join(ROOT, 'runtime'));
  return out;
}

/** Bundles each platform-neutral runtime module on its own; returns the failures (empty when all are neutral). */
export async function checkRuntimeIsPlatformNeutral(): Promise<string[]> {
  const failures: string[] = [];
  for (const file of platformNeutralRuntimeModules()) {
    try {
      await bundle(file, [], undefined, false);
    } catch (e) {
      failures.push(`${rel(file)}: ${(e as Error).message}`);
    }
  }
  return failures;
}

async function main(argv: string[]): Promise<void> {
  const value = (flag: string) => {
    const i = argv.indexOf(flag);
    if (i < 0) return undefined;
    const v = argv[i + 1];
    if (v === undefined || v.startsWith('--')) throw new Error(`${flag} needs a value`);
    return v;
  };
  const known = new Set(['--out', '--app', '--app-out', '--runtime-url', '--check-all', '--minify']);
  for (const a of argv) if (a.startsWith('--') && !known.has(a)) throw new Error(`unknown option ${a} (options: ${[...known].join(', ')})`);
  const minify = argv.includes('--minify');
  const out = path.resolve(value('--out') ?? DEFAULT_OUT);
  const rt = await bundleRuntime({ outfile: out, minify });
  console.log(`${rel(out)}: ${(rt.code.length / 1024).toFixed(0)} KiB, ${rt.modules.length} modules, no Node-only imports`);
  const app = value('--app');
  if (app) {
    const appOut = path.resolve(value('--app-out') ?? path.join(path.dirname(out), path.basename(app).replace(/\.ts$/, '.js')));
    const runtimeUrl = value('--runtime-url') ?? './' + path.relative(path.dirname(appOut), out).split(path.sep).join('/');
    const r = await bundleApp(app, { outfile: appOut, runtimeUrl, minify });
    console.log(`${rel(appOut)}: ${(r.code.length / 1024).toFixed(0)} KiB, imports the runtime from ${runtimeUrl}`);
  }
  if (argv.includes('--check-all')) {
    const failures = await checkRuntimeIsPlatformNeutral();
    if (failures.length) throw new Error(`runtime modules that do not bundle for the browser:\n${failures.join('\n')}`);
    console.log(`all ${platformNeutralRuntimeModules().length} runtime modules outside runtime/platform/node* bundle for the browser`);
  }
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main(process.argv.slice(2)).catch((e) => {
    console.error(`bundle-browser: ${(e as Error).message}`);
    process.exit(1);
  });
}
