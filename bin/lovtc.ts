// lovtc: the .lovt compiler command. Compiles one model for one mode and
// configuration; checks it (--check), lists its state (--params), estimates its
// cost (--stats), or writes the versioned artifact (-o DIR, compiler/artifact.ts)
// that `lovt-run train DIR` trains. Exit codes: 0 ok, 1 compile errors, 2 bad
// command line. Never prints a JavaScript stack trace. docs/language.md §15
// documents the command. Run it as `npx lovtc` or `node bin/lovtc.js`.

import path from 'node:path';
import { Command, CommanderError, Option } from 'commander';
import { type ArtifactPlan, type ProgramSummary, COMPILER_VERSION, buildArtifact, parseLimitArgs, planArtifact, writeArtifact } from '../compiler/artifact.ts';
import { checkLibrary, compileModel, parseSetArgs, renderDiagnostics, type ModelInfo } from '../compiler/frontend/index.ts';
import { graphStats } from '../compiler/frontend/stats.ts';
import { makeDirectory } from '../runtime/platform/node-fs.ts';

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

/** Where the command writes; the process's streams by default. */
export interface CliIO {
  stdout(s: string): void;
  stderr(s: string): void;
}

const processIO: CliIO = { stdout: (s) => process.stdout.write(s), stderr: (s) => process.stderr.write(s) };

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

/** A thrown Error from argument parsing becomes a usage error (exit 2). */
function usage<T>(parse: () => T): T {
  try {
    return parse();
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
}

const fmt = (n: number) => n.toLocaleString('en-US');

function human(n: number, unit: string): string {
  const steps: [number, string][] = [
    [1e15, 'P'],
    [1e12, 'T'],
    [1e9, 'G'],
    [1e6, 'M'],
    [1e3, 'k'],
  ];
  for (const [v, p] of steps) if (n >= v) return `${(n / v).toFixed(2)} ${p}${unit}`;
  return `${n} ${unit}`;
}

function bytes(n: number): string {
  const steps: [number, string][] = [
    [2 ** 30, 'GiB'],
    [2 ** 20, 'MiB'],
    [2 ** 10, 'KiB'],
  ];
  for (const [v, p] of steps) if (n >= v) return `${(n / v).toFixed(2)} ${p}`;
  return `${n} B`;
}

function paramsReport(model: ModelInfo): string {
  const rows = model.params.map((p) => [p.name, `[${p.shape.join(', ')}]`, fmt(p.count), p.kind === 'buffer' ? 'buffer' : p.trainable ? 'yes' : 'frozen']);
  const header = ['name', 'shape', 'count', 'trainable'];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (r: string[]) =>
    r
      .map((c, i) => (i === 2 ? c.padStart(widths[i]) : c.padEnd(widths[i])))
      .join('  ')
      .trimEnd();
  const c = model.counts;
  return [
    line(header),
    ...rows.map(line),
    '',
    `total: ${model.params.length} tensors; ${fmt(c.params)} parameters (${fmt(c.trainable)} trainable, ${fmt(c.params - c.trainable)} frozen); ${fmt(c.buffers)} buffer elements`,
  ].join('\n');
}

/** The --stats lines of the engine plan, and the warning about tensors over WebGPU's default binding limit. */
function planReport(plan: ArtifactPlan, limitArgs: string[]): { lines: string[]; warning?: string } {
  const progs = plan.programs;
  const pct = (p: ProgramSummary) => (p.noReuseBytes > 0 ? ` (${Math.round((100 * p.peakBytes) / p.noReuseBytes)}%)` : '');
  const lines = [
    `kernels      ${progs.map((p) => `${p.name} ${fmt(p.dispatches)} dispatches / ${fmt(p.pipelines)} pipelines`).join(', ')}; ${fmt(plan.kernels.length)} distinct pipelines`,
    `memory       ${progs.map((p) => `${p.name} ${bytes(p.peakBytes)} planned vs ${bytes(p.noReuseBytes)} without buffer reuse${pct(p)}`).join(', ')}; state ${bytes(plan.stateBytes)}`,
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
    .option('-o, --output <dir>', 'write the artifact (graph.json, plan.json, kernels/) to this folder; `lovt-run train DIR` trains it')
    .option('--model <name>', 'the model to compile (default: the only model in FILE)')
    .addOption(new Option('--mode <mode>', 'compile for training or evaluation').choices(['train', 'eval']).default('train'))
    .option('--set <key=value>', 'override a config (tau_local=0.2) or a train key (train.optimizer.lr=3e-4); repeatable', collect, [])
    .option('--lib <dir>', 'an extra import root; repeatable', collect, [])
    .option('--check', 'parse and elaborate only; print nothing on success')
    .option('--params', 'list the parameters and buffers with shapes and counts')
    .option('--stats', 'print op count, parameter count, FLOPs per step, front-end time, and the engine plan: kernels, dispatches, planned memory')
    .option('--limit <key=value>', 'plan for a device limit instead of the generic target, e.g. maxStorageBufferBindingSize=134217728; repeatable', collect, [])
    .version(COMPILER_VERSION, '-V, --version')
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
  const set = usage(() => parseSetArgs(opts.set));
  const limits = usage(() => parseLimitArgs(opts.limit));

  if (opts.check && !opts.model) {
    // A library file (blocks and fns, no model) is checked by parsing and linking it.
    const lib = checkLibrary({ path: file }, { roots: opts.lib });
    if (lib.ok && lib.models === 0) return 0;
  }
  const r = compileModel({ path: file }, { model: opts.model, mode: opts.mode, set, roots: opts.lib });
  const failed = (diagnostics: typeof r.diagnostics) => {
    io.stderr(renderDiagnostics(diagnostics, 'lovtc') + '\n');
    io.stderr(`${diagnostics.length} error${diagnostics.length === 1 ? '' : 's'}\n`);
    return 1;
  };
  if (!r.ok || !r.graph || !r.model) return failed(r.diagnostics);
  if (opts.check) return 0;

  const model = r.model;
  const out: string[] = [];
  if (opts.params) out.push(paramsReport(model));

  let plan: ArtifactPlan | undefined;
  if (opts.output !== undefined || opts.stats) {
    try {
      plan = planArtifact(r.graph, model, limits);
    } catch (e) {
      io.stderr(`lovtc: warning: the engine could not plan this graph: ${(e as Error).message}\n`);
    }
  }

  if (opts.stats) {
    const s = graphStats(r.graph, model.mode);
    const c = model.counts;
    const lines = [
      `model        ${model.name} (${model.mode} mode)${model.extends.length ? `, extends ${model.extends.join(' > ')}` : ''}`,
      `ops          ${fmt(s.nodes)} nodes (${s.byOp
        .slice(0, 6)
        .map(([op, n]) => `${op} ${n}`)
        .join(', ')}${s.byOp.length > 6 ? ', ...' : ''})`,
      `parameters   ${fmt(c.params)} (${fmt(c.trainable)} trainable), buffers ${fmt(c.buffers)} elements`,
      `FLOPs/step   ${human(s.stepFlops, 'FLOP')}${model.mode === 'train' ? ` (forward ${human(s.forwardFlops, 'FLOP')}, backward ≈ 2× forward)` : ''}`,
      `front end    ${r.timeMs.toFixed(1)} ms`,
    ];
    if (plan) {
      const report = planReport(plan, opts.limit);
      lines.push(...report.lines);
      if (report.warning) io.stderr(`lovtc: warning: ${report.warning}\n`);
    }
    out.push(lines.join('\n'));
  }

  if (opts.output) {
    const built = buildArtifact(r, { source: file, model: opts.model, mode: opts.mode, set, lib: opts.lib });
    if ('diagnostics' in built) return failed(built.diagnostics);
    await makeDirectory(opts.output, '-o').catch((e: Error) => {
      throw new UsageError(e.message);
    });
    writeArtifact(opts.output, built.artifact, plan);
    if (!opts.stats && !opts.params)
      out.push(`wrote ${path.join(opts.output, 'graph.json')}${plan ? `, plan.json and ${plan.kernels.length} distinct kernels` : ''}`);
  }
  if (!opts.output && !opts.params && !opts.stats) {
    out.push(`${model.name}: ${fmt(r.graph.nodes.length)} ops, ${fmt(model.counts.params)} parameters; no errors (use -o DIR to write the artifact)`);
  }
  if (out.length) io.stdout(out.join('\n\n') + '\n');
  return 0;
}

/** The command itself (bin/lovtc.js). */
export async function lovtcMain(): Promise<void> {
  // `lovtc --params | head` closes the pipe early: stop quietly instead of throwing.
  for (const stream of [process.stdout, process.stderr])
    stream.on('error', (e: NodeJS.ErrnoException) => {
      if (e.code === 'EPIPE') process.exit(process.exitCode ?? 0);
      throw e;
    });
  process.exitCode = await runLovtc(process.argv.slice(2));
}
