// The compiled artifact: what `lovtc MODEL -o DIR` writes and `lovt-run train DIR`
// (and `loss`) trains, so that the product's workflow runs on exactly what the
// compiler produced.
//
//   DIR/graph.json      { format: 'lovt-graph', irVersion, compiler: 'lovtc <version>',
//                         options: how it was compiled (source, --model, --mode, --set, --lib),
//                         model: ModelInfo (configs, train keys, per-file source hashes),
//                         graph: the model's graph in that mode,
//                         eval?: { model, graph } the eval-mode graph (train-mode artifacts) }
//   DIR/plan.json       the engine plan (train mode: the step and apply programs)
//   DIR/kernels/*.wgsl  one file per distinct pipeline
//
// graph.json holds everything a run needs: lovt-run builds the step and apply
// programs from the train-mode graph and its train section, as it does from a
// source, and validates on the eval-mode graph. Its SHA-256 names the artifact
// in a run's checkpoints. Node-only (files); the runtime reads it through
// runtime/platform/node-model.ts.

import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { compileModel, type CompileResult, type Diagnostic, IR_VERSION, type ModelInfo } from './frontend/index.ts';
import { fileKind } from './frontend/file-kind.ts';
import type { Graph } from './ir.ts';
import { clip } from './echo.ts';
import { validateGraph } from './ops/index.ts';
import { ENGINE_LIMIT_KEYS, GENERIC_TARGET, planGraph, planToJSON, type OversizedTensor } from './execution-plan.ts';
import { buildTrainingPrograms, optimizerOptions } from './train-program.ts';

export const ARTIFACT_FORMAT = 'lovt-graph';
export const ARTIFACT_GRAPH = 'graph.json';

/** The lovt package version (package.json), recorded in every artifact. */
export const COMPILER_VERSION = (JSON.parse(fs.readFileSync(fileURLToPath(new URL('../package.json', import.meta.url)), 'utf8')) as { version: string })
  .version;

/** What lovtc was given: enough to recompile the artifact. */
export interface ArtifactOptions {
  /** The .lovt file as given to lovtc. */
  source: string;
  model?: string;
  mode: 'train' | 'eval';
  set: Record<string, string>;
  lib: string[];
}

export interface CompiledGraph {
  model: ModelInfo;
  graph: Graph;
}

export interface Artifact extends CompiledGraph {
  format: typeof ARTIFACT_FORMAT;
  irVersion: number;
  compiler: string;
  options: ArtifactOptions;
  /** Train-mode artifacts: the same model compiled in eval mode. */
  eval?: CompiledGraph;
}

/** An artifact read from disk. */
export interface LoadedArtifact {
  dir: string;
  /** DIR/graph.json */
  file: string;
  artifact: Artifact;
  /** SHA-256 of graph.json (hex): the artifact's identity. */
  sha256: string;
}

/**
 * The artifact of a successful compile; train mode compiles the model once more in
 * eval mode (validation needs BatchNorm's running statistics and no dropout).
 */
export function buildArtifact(r: CompileResult, options: ArtifactOptions): { artifact: Artifact } | { diagnostics: Diagnostic[] } {
  if (!r.ok || !r.graph || !r.model) return { diagnostics: r.diagnostics };
  const artifact: Artifact = { format: ARTIFACT_FORMAT, irVersion: IR_VERSION, compiler: `lovtc ${COMPILER_VERSION}`, options, model: r.model, graph: r.graph };
  if (options.mode === 'train') {
    const e = compileModel({ path: options.source }, { model: options.model, mode: 'eval', set: options.set, roots: options.lib });
    if (!e.ok || !e.graph || !e.model) return { diagnostics: e.diagnostics };
    artifact.eval = { model: e.model, graph: e.graph };
  }
  return { artifact };
}

/** One program's plan in numbers (lovtc --stats). */
export interface ProgramSummary {
  name: string;
  dispatches: number;
  pipelines: number;
  peakBytes: number;
  noReuseBytes: number;
  oversized: OversizedTensor[];
}

export interface ArtifactPlan {
  plans: Record<string, unknown>;
  kernels: { name: string; wgsl: string }[];
  programs: ProgramSummary[];
  /** State of all programs together (parameters, buffers, gradient accumulators, optimizer moments). */
  stateBytes: number;
}

/**
 * `--limit KEY=VALUE` overrides of the generic target (compiler/execution-plan.ts
 * GENERIC_TARGET). Keys are the EngineLimits names; values are positive
 * integers, or `none` for no limit. Throws naming a bad one.
 */
export function parseLimitArgs(items: string[]): Record<string, number> {
  const keys: readonly string[] = ENGINE_LIMIT_KEYS;
  const out: Record<string, number> = {};
  for (const item of items) {
    const eq = item.indexOf('=');
    const key = eq > 0 ? item.slice(0, eq).trim() : '';
    if (!keys.includes(key)) throw new Error(`--limit needs KEY=VALUE with KEY one of ${keys.join(', ')}; got '${clip(item)}'`);
    const text = item.slice(eq + 1).trim();
    const value = text === 'none' ? Number.POSITIVE_INFINITY : Number(text);
    if (!(value > 0) || (Number.isFinite(value) && !Number.isInteger(value)))
      throw new Error(`--limit ${key}: '${text}' is not a positive integer (or 'none')`);
    out[key] = value;
  }
  return out;
}

/**
 * Plans the compiled graph with the engine's planner against the generic target
 * (with `limits` overrides): in train mode the step and apply programs, in eval
 * mode the forward graph.
 */
export function planArtifact(graph: Graph, model: ModelInfo, limits: Record<string, number>): ArtifactPlan {
  const target = { ...GENERIC_TARGET, ...limits };
  const programs: Record<string, Graph> = {};
  let checks: Record<string, unknown> = {};
  if (model.mode === 'train' && model.losses.length > 0) {
    const built = buildTrainingPrograms(graph, { loss: 'loss.total', accumulate: model.train.accumulate, optimizer: optimizerOptions(model.train.optimizer) });
    programs.step = built.step;
    programs.apply = built.apply;
    checks = built.checks;
  } else {
    programs.forward = graph;
  }
  const plans: Record<string, unknown> = {};
  // One .wgsl file per distinct pipeline, named after its first dispatch.
  const kernels: { name: string; wgsl: string }[] = [];
  const seen = new Set<string>();
  const summaries: ProgramSummary[] = [];
  const state = new Map<string, number>();
  for (const [name, g] of Object.entries(programs)) {
    const plan = planGraph(g, target);
    // What the program's `nonfinite` output counts, entry by entry.
    plans[name] = { ...JSON.parse(planToJSON(plan)), ...(checks[name] ? { checks: checks[name] } : {}) };
    plan.kernels.forEach((k, i) => {
      if (seen.has(k.wgsl)) return;
      seen.add(k.wgsl);
      kernels.push({ name: `${name}-${String(i).padStart(4, '0')}-${k.name.replace(/[^A-Za-z0-9_.-]/g, '_')}`, wgsl: k.wgsl });
    });
    for (const [stateName, s] of Object.entries(plan.state)) state.set(stateName, s.shape.reduce((a, d) => a * d, 1) * 4);
    const st = plan.stats;
    summaries.push({ name, dispatches: st.dispatches, pipelines: st.kernels, peakBytes: st.peakBytes, noReuseBytes: st.noReuseBytes, oversized: st.oversized });
  }
  const stateBytes = [...state.values()].reduce((a, b) => a + b, 0);
  return { plans, kernels, programs: summaries, stateBytes };
}

/**
 * Writes the artifact into `dir`, an existing directory (the caller creates and
 * checks it): graph.json, and plan.json with kernels/*.wgsl when there is a plan.
 */
export function writeArtifact(dir: string, artifact: Artifact, plan?: ArtifactPlan): void {
  fs.writeFileSync(path.join(dir, ARTIFACT_GRAPH), JSON.stringify(artifact));
  if (!plan) return;
  fs.writeFileSync(path.join(dir, 'plan.json'), JSON.stringify({ format: 'lovt-plan', irVersion: IR_VERSION, programs: plan.plans }));
  const kdir = path.join(dir, 'kernels');
  fs.mkdirSync(kdir, { recursive: true });
  // Kernels of an earlier compile go; nothing else in the folder is touched.
  for (const f of fs.readdirSync(kdir)) if (f.endsWith('.wgsl')) fs.rmSync(path.join(kdir, f), { force: true });
  for (const k of plan.kernels) fs.writeFileSync(path.join(kdir, `${k.name}.wgsl`), k.wgsl);
}

/** A word that a POSIX shell reads as itself. */
function shellWord(s: string): string {
  return /^[A-Za-z0-9_.,=/:+@%-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

/**
 * The lovtc command that rebuilds the artifact in `dir`, with `set` on top of
 * the options it was compiled with (the fix printed with every mismatch).
 */
export function recompileCommand(artifact: Partial<Artifact>, dir: string, set: Record<string, string> = {}, mode = artifact.options?.mode): string {
  const o = artifact.options;
  const words = ['lovtc', o?.source ?? 'MODEL.lovt', '-o', dir];
  if (o?.model) words.push('--model', o.model);
  if (mode === 'eval') words.push('--mode', 'eval');
  for (const lib of o?.lib ?? []) words.push('--lib', lib);
  for (const [k, v] of Object.entries({ ...o?.set, ...set })) words.push('--set', `${k}=${v}`);
  return words.map(shellWord).join(' ');
}

/**
 * Reads and checks `dir/graph.json`: a lovtc artifact of this IR version whose
 * graphs are valid. Every refusal says what the directory is and how to rebuild it.
 */
export function readArtifact(dir: string): LoadedArtifact {
  const file = path.join(dir, ARTIFACT_GRAPH);
  let st: fs.Stats;
  try {
    st = fs.statSync(file);
  } catch {
    throw new Error(
      `${dir} is a directory without ${ARTIFACT_GRAPH}: neither a .lovt file nor a lovtc artifact (write one with \`lovtc MODEL.lovt -o ${shellWord(dir)}\`)`,
    );
  }
  if (!st.isFile()) throw new Error(`${file} is ${fileKind(st)}, not a lovtc artifact's graph file`);
  const bytes = fs.readFileSync(file);
  let artifact: Artifact;
  try {
    artifact = JSON.parse(bytes.toString('utf8')) as Artifact;
  } catch (e) {
    throw new Error(`${file} is not valid JSON (${(e as Error).message}): rebuild the artifact with \`lovtc MODEL.lovt -o ${shellWord(dir)}\``);
  }
  if (artifact?.format !== ARTIFACT_FORMAT)
    throw new Error(`${file} is not a lovtc artifact (format ${JSON.stringify(artifact?.format)}, expected '${ARTIFACT_FORMAT}')`);
  if (artifact.irVersion !== IR_VERSION) {
    throw new Error(
      `${file} was compiled by ${artifact.compiler ?? 'an unknown lovtc'} for IR version ${artifact.irVersion}; this lovt reads IR version ${IR_VERSION}: ` +
        `recompile with \`${recompileCommand(artifact, dir)}\``,
    );
  }
  for (const [what, g] of [
    ['graph', artifact.graph],
    ['eval graph', artifact.eval?.graph],
  ] as const) {
    if (g === undefined && what === 'eval graph') continue;
    try {
      validateGraph(g as Graph);
    } catch (e) {
      throw new Error(`${file}: the ${what} is invalid (${(e as Error).message}): recompile with \`${recompileCommand(artifact, dir)}\``);
    }
  }
  return { dir, file, artifact, sha256: createHash('sha256').update(bytes).digest('hex') };
}
