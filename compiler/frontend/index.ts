// The front end's public API: compileModel() takes a .lovt file (or text) and
// options (model, --set overrides, mode, import roots) and returns the graph IR,
// the ModelInfo, and located diagnostics. It never throws for bad input; an
// internal failure becomes an "internal compiler error" diagnostic.

import { clip } from '../echo.ts';
import { createHash } from 'node:crypto';
import { type Graph, IR_VERSION } from '../ir.ts';
import { validateGraph } from '../ops/index.ts';
import { CompileError, type Diagnostic, FatalError, didYouMean, makeDiagnostic, renderDiagnostic, renderDiagnostics } from './diagnostics.ts';
import { Elaborator } from './elaborate.ts';
import { linkProgram } from './link.ts';
import { type ModelInfo, paramTable, runModel } from './model.ts';
import { makeBuiltins } from './primitives.ts';
import { type LoadedFile, type SourceHost, loadProgram } from './resolve.ts';
import { flattenModel } from './variants.ts';

export type { Diagnostic } from './diagnostics.ts';
export type { LossInfo, ModelInfo, ParamInfo } from './model.ts';
export type { OptimizerSpec, ScheduleSpec, TrainSpec } from './train.ts';
export type { SourceHost } from './resolve.ts';
export { renderDiagnostic, renderDiagnostics, IR_VERSION };

export interface CompileOptions {
  /** Which model (default: the only model defined in the main file). */
  model?: string;
  /** --set overrides: config names and train.* keys to value text. */
  set?: Record<string, string>;
  mode?: 'train' | 'eval';
  /** Extra import roots (--lib). */
  roots?: string[];
  host?: SourceHost;
  /** Overrides the std library root (default: the repository's models/). */
  stdRoot?: string;
}

export interface CompileResult {
  ok: boolean;
  graph: Graph | null;
  model: ModelInfo | null;
  diagnostics: Diagnostic[];
  /** Front-end wall time in milliseconds (load, parse, link, elaborate). */
  timeMs: number;
  /** Display paths of every loaded file, main file first. */
  files: string[];
}

const BUILTINS = makeBuiltins();
const RESERVED = new Set([...BUILTINS.keys(), 'training']);

/** Names of the built-in callables (primitives, compile-time built-ins, initialisers). */
export function builtinNames(): string[] {
  return [...BUILTINS.keys()];
}

function attachSources(diags: Diagnostic[], files: LoadedFile[]): Diagnostic[] {
  const byPath = new Map(files.map((f) => [f.path, f]));
  const lines = new Map<string, string[]>();
  return diags.map((d) => {
    const f = byPath.get(d.file);
    if (!f) return d;
    let ls = lines.get(f.path);
    if (!ls) {
      ls = f.text.split(/\r?\n/);
      lines.set(f.path, ls);
    }
    const out: Diagnostic = { ...d };
    if (d.line > 0) out.source = ls[d.line - 1] ?? '';
    if (f.chain.length) out.importChain = f.chain;
    return out;
  });
}

const sha256 = (text: string): string => createHash('sha256').update(text).digest('hex');

/**
 * The model's source identity: the main file's content, then the contents of its
 * imports. Paths do not count, so the same files elsewhere (a copied checkout)
 * are the same model.
 */
function sourceHash(sources: { sha256: string }[]): string {
  const [main, ...imports] = sources.map((s) => s.sha256);
  return sha256([main, ...imports.sort()].join('\n'));
}

/**
 * Checks a library file (one that defines blocks and fns but no model): parses it
 * and its imports and links every name. `defines` counts what it declares.
 * Block and fn bodies are elaborated only when a model uses them.
 */
export function checkLibrary(
  source: { path: string } | { text: string; path: string },
  opts: CompileOptions = {},
): { ok: boolean; diagnostics: Diagnostic[]; defines: number; models: number } {
  const program = loadProgram(source, { roots: opts.roots, host: opts.host, stdRoot: opts.stdRoot });
  if (!program.main || program.diagnostics.length) return { ok: false, diagnostics: attachSources(program.diagnostics, program.files), defines: 0, models: 0 };
  const { globals, diagnostics } = linkProgram(program, RESERVED);
  const main = program.main;
  const defines = [...globals.table.values()].filter((d) => globals.models.every((m) => m.decl !== d)).length;
  return {
    ok: diagnostics.length === 0,
    diagnostics: attachSources(diagnostics, program.files),
    defines,
    models: globals.models.filter((m) => m.file === main).length,
  };
}

/** Compiles one model of a .lovt program into the graph IR. */
export function compileModel(source: { path: string } | { text: string; path: string }, opts: CompileOptions = {}): CompileResult {
  const t0 = performance.now();
  const mode = opts.mode ?? 'train';
  const program = loadProgram(source, { roots: opts.roots, host: opts.host, stdRoot: opts.stdRoot });
  const fail = (diags: Diagnostic[]): CompileResult => ({
    ok: false,
    graph: null,
    model: null,
    diagnostics: attachSources(diags, program.files),
    timeMs: performance.now() - t0,
    files: program.files.map((f) => f.path),
  });
  if (!program.main || program.diagnostics.length) return fail(program.diagnostics);

  const { globals, diagnostics: linkDiags } = linkProgram(program, RESERVED);
  if (linkDiags.length) return fail(linkDiags);

  // Which model.
  const mainModels = globals.models.filter((m) => m.file === program.main);
  let chosen = opts.model ? globals.models.find((m) => m.decl.name.name === opts.model) : mainModels.length === 1 ? mainModels[0] : undefined;
  if (!chosen) {
    const names = globals.models.map((m) => m.decl.name.name);
    if (opts.model)
      return fail([
        makeDiagnostic(undefined, `no model named '${opts.model}'${names.length ? ` (models: ${names.join(', ')})` : ''}`, didYouMean(opts.model, names)),
      ]);
    if (mainModels.length === 0)
      return fail([
        makeDiagnostic(undefined, `${program.main.path} defines no model${names.length ? `; pick an imported one with --model (${names.join(', ')})` : ''}`),
      ]);
    return fail([
      makeDiagnostic(
        undefined,
        `${program.main.path} defines several models (${mainModels.map((m) => m.decl.name.name).join(', ')}); pick one with --model NAME`,
      ),
    ]);
  }
  chosen = chosen!;

  const flatDiags: Diagnostic[] = [];
  const flat = flattenModel(chosen.decl, globals, flatDiags);
  if (flatDiags.length) return fail(flatDiags);

  const sources = new Map(program.files.map((f) => [f.path, f.text]));
  const el = new Elaborator(globals.table, BUILTINS, { mode, sources });
  let run: ReturnType<typeof runModel> | undefined;
  try {
    run = runModel(el, flat, opts.set ?? {});
  } catch (e) {
    if (e instanceof FatalError) {
      if (e.message !== 'too many errors; stopping') el.diagnostics.push(makeDiagnostic(e.range, e.message, e.extras));
    } else if (e instanceof CompileError) {
      el.diagnostics.push(makeDiagnostic(e.range, e.message, e.extras));
    } else {
      el.diagnostics.push(internalError(e));
    }
  }
  if (el.diagnostics.length || !run) return fail(el.diagnostics);

  const graph = el.b.graph;
  try {
    validateGraph(graph);
  } catch (e) {
    return fail([internalError(e)]);
  }
  const params = paramTable(graph, el.stateKinds);
  const sourceFiles = program.files.map((f) => ({ path: f.path, sha256: sha256(f.text) }));
  const model: ModelInfo = {
    name: flat.name,
    file: chosen.file.path,
    extends: flat.chain.slice(0, -1).map((m) => m.name.name),
    mode,
    ...run,
    params,
    counts: {
      params: params.filter((p) => p.kind === 'param').reduce((s, p) => s + p.count, 0),
      trainable: params.filter((p) => p.trainable).reduce((s, p) => s + p.count, 0),
      buffers: params.filter((p) => p.kind === 'buffer').reduce((s, p) => s + p.count, 0),
    },
    sources: sourceFiles,
    sourceHash: sourceHash(sourceFiles),
  };
  return { ok: true, graph, model, diagnostics: [], timeMs: performance.now() - t0, files: program.files.map((f) => f.path) };
}

function internalError(e: unknown): Diagnostic {
  const msg = e instanceof Error ? e.message : String(e);
  return makeDiagnostic(undefined, `internal compiler error: ${msg}`, { hint: 'this is a bug in lovtc; please report it with the input file' });
}

/**
 * `--set KEY=VALUE` arguments (lovtc, lovt-run) as the overrides record; a
 * malformed one throws naming it.
 */
export function parseSetArgs(items: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const item of items) {
    const eq = item.indexOf('=');
    if (eq <= 0) throw new Error(`--set expects key=value (e.g. --set tau_local=0.2), got '${clip(item)}'`);
    const key = item.slice(0, eq).trim();
    if (!/^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$/.test(key)) throw new Error(`--set: '${key}' is not a config name or train.KEY path`);
    out[key] = item.slice(eq + 1).trim();
  }
  return out;
}

/** compileModel that throws a CompileFailed (with rendered diagnostics) instead of returning errors. */
export class CompileFailed extends Error {
  constructor(readonly diagnostics: Diagnostic[]) {
    super(renderDiagnostics(diagnostics));
  }
}

export function compileModelOrThrow(source: { path: string } | { text: string; path: string }, opts: CompileOptions = {}): { graph: Graph; model: ModelInfo } {
  const r = compileModel(source, opts);
  if (!r.ok || !r.graph || !r.model) throw new CompileFailed(r.diagnostics);
  return { graph: r.graph, model: r.model };
}
