// The lovtc command (bin/lovtc.ts is its entry point): compiles one model for
// one mode and configuration; checks it (--check), lists its state (--params),
// estimates its cost (--stats), or writes the versioned artifact (-o DIR:
// graph.json, and plan.json + kernels/*.wgsl from the engine's planner). Exit
// codes: 0 ok, 1 compile errors, 2 bad command line. Never prints a JavaScript
// stack trace. docs/language.md §15 documents the command and the artifact.

import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command, CommanderError, Option } from 'commander';
import { type CompileResult, IR_VERSION, checkLibrary, compileModel, renderDiagnostic } from './index.ts';
import type { ModelInfo } from './index.ts';
import { graphStats } from './stats.ts';
import type { Graph } from '../ir.ts';

const here = path.dirname(fileURLToPath(import.meta.url));
const VERSION = (JSON.parse(fs.readFileSync(path.join(here, '..', '..', 'package.json'), 'utf8')) as { version: string }).version;

export const ARTIFACT_FORMAT = 'lovt-graph';

class UsageError extends Error {}

interface Options {
  output?: string;
  model?: string;
  mode: 'train' | 'eval';
  set: string[];
  lib: string[];
  check?: boolean;
  params?: boolean;
  stats?: boolean;
  limit: string[];
}

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

function parseSets(items: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const item of items) {
    const eq = item.indexOf('=');
    if (eq <= 0) throw new UsageError(`--set needs KEY=VALUE, got '${item}'`);
    const key = item.slice(0, eq).trim();
    if (!/^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$/.test(key)) throw new UsageError(`--set: '${key}' is not a config name or train.KEY path`);
    out[key] = item.slice(eq + 1);
  }
  return out;
}

const fmt = (n: number) => n.toLocaleString('en-US');

function human(n: number, unit: string): string {
  const steps: [number, string][] = [[1e15, 'P'], [1e12, 'T'], [1e9, 'G'], [1e6, 'M'], [1e3, 'k']];
  for (const [v, p] of steps) if (n >= v) return `${(n / v).toFixed(2)} ${p}${unit}`;
  return `${n} ${unit}`;
}

function bytes(n: number): string {
  const steps: [number, string][] = [[2 ** 30, 'GiB'], [2 ** 20, 'MiB'], [2 ** 10, 'KiB']];
  for (const [v, p] of steps) if (n >= v) return `${(n / v).toFixed(2)} ${p}`;
  return `${n} B`;
}

function paramsReport(model: ModelInfo): string {
  const rows = model.params.map((p) => [p.name, `[${p.shape.join(', ')}]`, fmt(p.count), p.kind === 'buffer' ? 'buffer' : p.trainable ? 'yes' : 'frozen']);
  const header = ['name', 'shape', 'count', 'trainable'];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (r: string[]) => r.map((c, i) => (i === 2 ? c.padStart(widths[i]) : c.padEnd(widths[i]))).join('  ').trimEnd();
  const c = model.counts;
  return [
    line(header),
    ...rows.map(line),
    '',
    `total: ${model.params.length} tensors; ${fmt(c.params)} parameters (${fmt(c.trainable)} trainable, ${fmt(c.params - c.trainable)} frozen); ${fmt(c.buffers)} buffer elements`,
  ].join('\n');
}

/** One program's plan in numbers (lovtc --stats). */
interface ProgramSummary {
  name: string;
  dispatches: number;
  pipelines: number;
  peakBytes: number;
  noReuseBytes: number;
  oversized: { description: string; bytes: number }[];
}

interface PlanSummary {
  programs: ProgramSummary[];
  /** Distinct pipelines (WGSL texts) over all programs. */
  pipelines: number;
  /** State of all programs together (parameters, buffers, gradient accumulators, optimizer moments). */
  stateBytes: number;
}

/**
 * --limit KEY=VALUE overrides of the generic target (compiler/schedule.ts
 * GENERIC_TARGET). Keys are the EngineLimits names; values are positive
 * integers, or `none` for no limit.
 */
function parseLimits(items: string[], keys: readonly string[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const item of items) {
    const eq = item.indexOf('=');
    const key = eq > 0 ? item.slice(0, eq).trim() : '';
    if (!keys.includes(key)) throw new UsageError(`--limit needs KEY=VALUE with KEY one of ${keys.join(', ')}; got '${item}'`);
    const text = item.slice(eq + 1).trim();
    const value = text === 'none' ? Number.POSITIVE_INFINITY : Number(text);
    if (!(value > 0) || (Number.isFinite(value) && !Number.isInteger(value))) throw new UsageError(`--limit ${key}: '${text}' is not a positive integer (or 'none')`);
    out[key] = value;
  }
  return out;
}

/**
 * Plans the compiled graph with the engine's planner against the generic
 * target (with --limit overrides): for train mode the step and apply programs.
 */
async function planArtifact(
  graph: Graph,
  model: ModelInfo,
  limitArgs: string[],
): Promise<{ plans: Record<string, unknown>; kernels: { name: string; wgsl: string }[]; summary: PlanSummary } | undefined> {
  let schedule: typeof import('../schedule.ts');
  try {
    schedule = await import('../schedule.ts');
  } catch {
    return undefined;
  }
  if (typeof schedule.planGraph !== 'function') return undefined;
  const limits = { ...schedule.GENERIC_TARGET, ...parseLimits(limitArgs, schedule.ENGINE_LIMIT_KEYS) };
  const programs: Record<string, Graph> = {};
  let checks: Record<string, unknown> = {};
  if (model.mode === 'train' && model.losses.length > 0) {
    const tp = await import('../train-program.ts');
    const o = model.train.optimizer;
    const built = tp.buildTrainingPrograms(graph, {
      loss: 'loss.total',
      accumulate: model.train.accumulate,
      optimizer: { kind: o.kind, beta1: o.betas[0], beta2: o.betas[1], eps: o.eps, weightDecay: o.weight_decay, momentum: o.momentum, nesterov: o.nesterov },
    });
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
    const plan = schedule.planGraph(g, limits);
    // What the program's `nonfinite` output counts, entry by entry.
    plans[name] = { ...JSON.parse(schedule.planToJSON(plan)), ...(checks[name] ? { checks: checks[name] } : {}) };
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
  return { plans, kernels, summary: { programs: summaries, pipelines: kernels.length, stateBytes } };
}

/** The --stats lines of the engine plan, and the warning about tensors over WebGPU's default binding limit. */
function planReport(summary: PlanSummary, limitArgs: string[]): { lines: string[]; warning?: string } {
  const progs = summary.programs;
  const pct = (p: ProgramSummary) => (p.noReuseBytes > 0 ? ` (${Math.round((100 * p.peakBytes) / p.noReuseBytes)}%)` : '');
  const lines = [
    `kernels      ${progs.map((p) => `${p.name} ${fmt(p.dispatches)} dispatches / ${fmt(p.pipelines)} pipelines`).join(', ')}; ${fmt(summary.pipelines)} distinct pipelines`,
    `memory       ${progs.map((p) => `${p.name} ${bytes(p.peakBytes)} planned vs ${bytes(p.noReuseBytes)} without buffer reuse${pct(p)}`).join(', ')}; state ${bytes(summary.stateBytes)}`,
    `target       ${limitArgs.length ? `generic with ${limitArgs.join(', ')}` : 'generic: WebGPU default limits without a buffer-size limit (--limit KEY=VALUE to plan for a device)'}`,
  ];
  const over = progs.flatMap((p) => p.oversized.map((o) => ({ ...o, program: p.name })));
  if (!over.length) return { lines };
  const shown = over.slice(0, 12).map((o) => `  ${o.program}: ${o.description} ${bytes(o.bytes)}`);
  if (over.length > shown.length) shown.push(`  ... and ${over.length - shown.length} more`);
  const warning =
    `${over.length} tensor${over.length === 1 ? '' : 's'} exceed WebGPU's default storage-buffer binding limit of 128 MiB: ` +
    `the device must grant a larger maxStorageBufferBindingSize and maxBufferSize, or the batch must shrink\n${shown.join('\n')}`;
  return { lines, warning };
}

function writeArtifact(dir: string, r: CompileResult): void {
  fs.mkdirSync(dir, { recursive: true });
  const artifact = {
    format: ARTIFACT_FORMAT,
    irVersion: IR_VERSION,
    compiler: `lovtc ${VERSION}`,
    model: r.model,
    graph: r.graph,
  };
  fs.writeFileSync(path.join(dir, 'graph.json'), JSON.stringify(artifact));
}

/** Where the command writes; the process's streams by default. */
export interface CliIO {
  stdout(s: string): void;
  stderr(s: string): void;
}

const processIO: CliIO = { stdout: (s) => process.stdout.write(s), stderr: (s) => process.stderr.write(s) };

/** Runs lovtc with the given arguments; resolves to the exit code. Never throws. */
export async function runLovtc(argv: string[], io: CliIO = processIO): Promise<number> {
  try {
    return await main(argv, io);
  } catch (e) {
    if (e instanceof UsageError) {
      io.stderr(`lovtc: ${e.message}\n`);
      return 2;
    }
    io.stderr(`lovtc: internal error: ${e instanceof Error ? e.message : String(e)}\n`);
    return 1;
  }
}

async function main(argv: string[], io: CliIO): Promise<number> {
  const program = new Command();
  program
    .name('lovtc')
    .description('Compile a .lovt model into the lovt graph IR (and the engine plan).')
    .argument('<file>', 'the .lovt file')
    .option('-o, --output <dir>', 'write the artifact (graph.json, plan.json, kernels/) to this folder')
    .option('--model <name>', 'the model to compile (default: the only model in FILE)')
    .addOption(new Option('--mode <mode>', 'compile for training or evaluation').choices(['train', 'eval']).default('train'))
    .option('--set <key=value>', 'override a config (tau_local=0.2) or a train key (train.optimizer.lr=3e-4); repeatable', collect, [])
    .option('--lib <dir>', 'an extra import root; repeatable', collect, [])
    .option('--check', 'parse and elaborate only; print nothing on success')
    .option('--params', 'list the parameters and buffers with shapes and counts')
    .option('--stats', 'print op count, parameter count, FLOPs per step, front-end time, and the engine plan: kernels, dispatches, planned memory')
    .option('--limit <key=value>', 'plan for a device limit instead of the generic target, e.g. maxStorageBufferBindingSize=134217728; repeatable', collect, [])
    .version(VERSION, '-V, --version')
    .exitOverride()
    .configureOutput({ writeErr: (s) => io.stderr(s), writeOut: (s) => io.stdout(s) })
    .showHelpAfterError('(run lovtc --help for usage)');

  try {
    program.parse(argv, { from: 'user' });
  } catch (e) {
    if (e instanceof CommanderError) return e.exitCode === 0 ? 0 : 2;
    throw e;
  }
  const opts = program.opts<Options>();
  const file = program.args[0];
  const set = parseSets(opts.set);

  if (opts.check && !opts.model) {
    // A library file (blocks and fns, no model) is checked by parsing and linking it.
    const lib = checkLibrary({ path: file }, { roots: opts.lib });
    if (lib.ok && lib.models === 0) return 0;
  }
  const r = compileModel({ path: file }, { model: opts.model, mode: opts.mode, set, roots: opts.lib });
  if (!r.ok || !r.graph || !r.model) {
    io.stderr(r.diagnostics.map(renderDiagnostic).join('\n\n') + '\n');
    const n = r.diagnostics.length;
    io.stderr(`${n} error${n === 1 ? '' : 's'}\n`);
    return 1;
  }
  if (opts.check) return 0;

  const model = r.model;
  const out: string[] = [];
  if (opts.params) out.push(paramsReport(model));

  let plan: Awaited<ReturnType<typeof planArtifact>>;
  const wantPlan = opts.output !== undefined || opts.stats;
  if (wantPlan) {
    try {
      plan = await planArtifact(r.graph, model, opts.limit);
    } catch (e) {
      if (e instanceof UsageError) throw e;
      io.stderr(`lovtc: warning: the engine could not plan this graph: ${(e as Error).message}\n`);
    }
  }

  if (opts.stats) {
    const s = graphStats(r.graph, model.mode);
    const c = model.counts;
    const lines = [
      `model        ${model.name} (${model.mode} mode)${model.extends.length ? `, extends ${model.extends.join(' > ')}` : ''}`,
      `ops          ${fmt(s.nodes)} nodes (${s.byOp.slice(0, 6).map(([op, n]) => `${op} ${n}`).join(', ')}${s.byOp.length > 6 ? ', ...' : ''})`,
      `parameters   ${fmt(c.params)} (${fmt(c.trainable)} trainable), buffers ${fmt(c.buffers)} elements`,
      `FLOPs/step   ${human(s.stepFlops, 'FLOP')}${model.mode === 'train' ? ` (forward ${human(s.forwardFlops, 'FLOP')}, backward ≈ 2× forward)` : ''}`,
      `front end    ${r.timeMs.toFixed(1)} ms`,
    ];
    if (plan) {
      const report = planReport(plan.summary, opts.limit);
      lines.push(...report.lines);
      if (report.warning) io.stderr(`lovtc: warning: ${report.warning}\n`);
    }
    out.push(lines.join('\n'));
  }

  if (opts.output) {
    writeArtifact(opts.output, r);
    if (plan) {
      fs.writeFileSync(path.join(opts.output, 'plan.json'), JSON.stringify({ format: 'lovt-plan', irVersion: IR_VERSION, programs: plan.plans }));
      const kdir = path.join(opts.output, 'kernels');
      fs.rmSync(kdir, { recursive: true, force: true });
      fs.mkdirSync(kdir, { recursive: true });
      for (const k of plan.kernels) fs.writeFileSync(path.join(kdir, `${k.name}.wgsl`), k.wgsl);
    }
    if (!opts.stats && !opts.params) out.push(`wrote ${path.join(opts.output, 'graph.json')}${plan ? `, plan.json and ${plan.kernels.length} distinct kernels` : ''}`);
  }
  if (!opts.output && !opts.params && !opts.stats) {
    out.push(`${model.name}: ${fmt(r.graph.nodes.length)} ops, ${fmt(model.counts.params)} parameters; no errors (use -o DIR to write the artifact)`);
  }
  if (out.length) io.stdout(out.join('\n\n') + '\n');
  return 0;
}
