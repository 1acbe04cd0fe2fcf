// `npm run bench`: lovt's contraction kernels against TF.js on the same
// adapter, in one process. Prints a table and writes bench/results.json.
//   npm run bench -- [--runs N] [--warmup N] [--only SUBSTRING] [--no-peers]
// Each step is timed from dispatch until the device reports the work done
// (lovt: queue.onSubmittedWorkDone; TF.js WebGPU: its command encoder flushed,
// then the same; TF.js WASM: dataSync), after warm-up runs; the median of the
// timed runs is reported. See bench/README.md for how to read the output.

import { writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { GraphBuilder } from '../compiler/builder.ts';
import type { Graph, Node } from '../compiler/ir.ts';
import type { Kernel } from '../compiler/codegen/kernel.ts';
import { renderMatmul } from '../compiler/codegen/matmul.ts';
import { renderConv2d, renderConv2dGradInput, renderConv2dGradWeight } from '../compiler/codegen/conv.ts';
import { type ContractionTarget, contractionTarget } from '../compiler/codegen/tiling.ts';
import { getNodeDevice, nodeGPU } from '../runtime/platform/node.ts';
import type { LovtDevice } from '../runtime/device.ts';
import { prepareKernel } from '../test/gpu/kernel-runner.ts';
import { type BenchCase, type BenchRunner, type PreparedCase, stepNames, tfjsWasm, tfjsWebGPU } from './peers.ts';

const here = path.dirname(fileURLToPath(import.meta.url));

interface Args {
  runs: number;
  warmup: number;
  only: string | null;
  peers: boolean;
}

function parseArgs(argv: string[]): Args {
  const args: Args = { runs: 5, warmup: 1, only: null, peers: true };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = () => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value`);
      return v;
    };
    if (a === '--runs') args.runs = Math.max(1, parseInt(value(), 10));
    else if (a === '--warmup') args.warmup = Math.max(0, parseInt(value(), 10));
    else if (a === '--only') args.only = value();
    else if (a === '--no-peers') args.peers = false;
    else throw new Error(`unknown argument ${a} (expected --runs N, --warmup N, --only SUBSTRING, --no-peers)`);
  }
  return args;
}

const CASES: { name: string; c: BenchCase }[] = [
  { name: 'matmul 1024x1024x1024', c: { kind: 'matmul', M: 1024, K: 1024, N: 1024 } },
  { name: 'conv3x3 [8,64,56,56] 64->64', c: { kind: 'conv3x3', N: 8, C: 64, H: 56, W: 56, O: 64 } },
  { name: 'conv3x3 [8,256,14,14] 256->256', c: { kind: 'conv3x3', N: 8, C: 256, H: 14, W: 14, O: 256 } },
];

/** FLOPs of each step of a case (the three conv steps cost the same). */
function stepFlops(c: BenchCase): number {
  return c.kind === 'matmul' ? 2 * c.M * c.K * c.N : 2 * c.N * c.O * c.H * c.W * c.C * 9;
}

function random(n: number): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = Math.random() * 2 - 1;
  return a;
}

/** lovt's kernels for a case, rendered for this device's target. */
function lovtKernels(c: BenchCase, target: ContractionTarget, maxWorkgroupsPerDim: number): { kernel: Kernel; graph: Graph; node: Node }[] {
  const g = new GraphBuilder();
  const opts = { maxWorkgroupsPerDim, target };
  if (c.kind === 'matmul') {
    const z = g.emit('matmul', [g.input('a', [c.M, c.K]), g.input('b', [c.K, c.N])]);
    return [{ kernel: renderMatmul(g.graph, g.node(z), opts), graph: g.graph, node: g.node(z) }];
  }
  const attrs = { stride: 1, padding: 1, dilation: 1, groups: 1 };
  const x = g.input('x', [c.N, c.C, c.H, c.W]);
  const w = g.input('w', [c.O, c.C, 3, 3]);
  const dy = g.input('dy', [c.N, c.O, c.H, c.W]);
  const y = g.node(g.emit('conv2d', [x, w], attrs));
  const gi = g.node(g.emit('conv2d_grad_input', [dy, w], { ...attrs, inputSize: [c.H, c.W] }));
  const gw = g.node(g.emit('conv2d_grad_weight', [x, dy], { ...attrs, kernelSize: [3, 3] }));
  return [
    { kernel: renderConv2d(g.graph, y, opts), graph: g.graph, node: y },
    { kernel: renderConv2dGradInput(g.graph, gi, opts), graph: g.graph, node: gi },
    { kernel: renderConv2dGradWeight(g.graph, gw, opts), graph: g.graph, node: gw },
  ];
}

function lovtRunner(lovt: LovtDevice, target: ContractionTarget): BenchRunner {
  return {
    name: 'lovt',
    async prepare(c) {
      const kernels = lovtKernels(c, target, lovt.limits.maxComputeWorkgroupsPerDimension);
      const names = stepNames(c);
      const prepared = await Promise.all(
        kernels.map(({ kernel, graph, node }) =>
          prepareKernel(lovt.device, kernel, node.inputs.map((i) => random(graph.nodes[i].shape.reduce((a, b) => a * b, 1))), node.shape.reduce((a, b) => a * b, 1)),
        ),
      );
      return {
        steps: prepared.map((p, i) => ({ name: `${names[i]} (${kernels[i].kernel.name})`, run: () => p.run() })),
        dispose: () => prepared.forEach((p) => p.destroy()),
      };
    },
  };
}

interface StepResult {
  name: string;
  medianMs: number | null;
  gflops: number | null;
}

interface RunnerResult {
  runner: string;
  steps: StepResult[];
  /** Whole case (all steps): null when a step is missing. */
  totalMs: number | null;
  totalGflops: number | null;
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

/**
 * Times every runner on one case. Iterations are interleaved (lovt, peer, peer,
 * lovt, ...) so that all runners see the same machine load: on a CPU-emulated
 * device other processes change the times a lot, and the ratios are what count.
 */
async function measure(runners: BenchRunner[], c: BenchCase, args: Args): Promise<RunnerResult[]> {
  const prepared: PreparedCase[] = [];
  try {
    for (const r of runners) prepared.push(await r.prepare(c));
    const times = prepared.map((p) => p.steps.map((): number[] => []));
    const totals = prepared.map((): number[] => []);
    for (let it = 0; it < args.warmup + args.runs; it++) {
      for (const [r, p] of prepared.entries()) {
        await p.activate?.();
        let total = 0;
        for (const [i, step] of p.steps.entries()) {
          if (!step.run) continue;
          const t0 = performance.now();
          await step.run();
          const dt = performance.now() - t0;
          if (it >= args.warmup) times[r][i].push(dt);
          total += dt;
        }
        if (it >= args.warmup) totals[r].push(total);
      }
    }
    const flops = stepFlops(c);
    return prepared.map((p, r) => {
      const steps = p.steps.map((s, i) => {
        const ms = s.run ? median(times[r][i]) : null;
        return { name: s.name, medianMs: ms, gflops: ms ? flops / ms / 1e6 : null };
      });
      const totalMs = p.steps.every((s) => s.run) ? median(totals[r]) : null;
      return { runner: runners[r].name, steps, totalMs, totalGflops: totalMs ? (flops * steps.length) / totalMs / 1e6 : null };
    });
  } finally {
    for (const p of prepared) p.dispose();
  }
}

// ---------------------------------------------------------------------------
// Whole-model rows. HOOK for the lead: once the executor (runtime/executor.ts)
// and the front end can build and run these programs, return the measured
// value here (steps/s resp. samples/s); until then the rows print
// "not yet available" -- never an invented number.

interface ModelRow {
  name: string;
  unit: string;
  measure: (lovt: LovtDevice) => Promise<number | null>;
}

const MODEL_ROWS: ModelRow[] = [
  { name: 'training step: small ResNet + contrastive loss', unit: 'steps/s', measure: async () => null },
  { name: 'lovt-tiny training throughput', unit: 'samples/s', measure: async () => null },
];

// ---------------------------------------------------------------------------

const fmt = (x: number | null, digits = 1) => (x === null ? 'n/a' : x.toFixed(digits));

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const gpu = nodeGPU();
  const lovt = await getNodeDevice();
  const target = contractionTarget(lovt);
  console.log(`device: ${lovt.description}   kernel family: ${target.kind}${target.subgroupSize ? ` (subgroup ${target.subgroupSize})` : ''}`);
  const loadBefore = os.loadavg()[0];
  console.log(`timing: ${args.warmup} warm-up + median of ${args.runs} runs, waiting for completion; load average ${loadBefore.toFixed(2)} on ${os.cpus().length} CPUs\n`);

  const runners: BenchRunner[] = [lovtRunner(lovt, target)];
  const peerErrors: Record<string, string> = {};
  if (args.peers) {
    for (const [name, make] of [['tfjs-webgpu', () => tfjsWebGPU(lovt, gpu)], ['tfjs-wasm', () => tfjsWasm()]] as const) {
      try {
        runners.push(await make());
      } catch (e) {
        peerErrors[name] = (e as Error).message;
        console.log(`peer ${name} unavailable: ${(e as Error).message}`);
      }
    }
  }

  const results: { name: string; case: BenchCase; flopsPerStep: number; runners: RunnerResult[]; ratios: Record<string, number | null> }[] = [];
  for (const { name, c } of CASES) {
    if (args.only && !name.includes(args.only)) continue;
    process.stdout.write(`  ${name} ...`);
    const rs = await measure(runners, c, args);
    process.stdout.write(` ${rs.map((r) => `${r.runner} ${fmt(r.totalMs)} ms`).join(', ')}\n`);
    const ours = rs[0];
    const ratios: Record<string, number | null> = {};
    for (const p of rs.slice(1)) ratios[p.runner] = ours.totalMs && p.totalMs ? p.totalMs / ours.totalMs : null;
    results.push({ name, case: c, flopsPerStep: stepFlops(c), runners: rs, ratios });
  }

  // Table: one line per case total and per step, ours first, then each peer with its time ratio to ours.
  const header = ['case / step', 'lovt ms', 'GFLOP/s', ...runners.slice(1).flatMap((r) => [`${r.name} ms`, 'x slower'])];
  const rows: string[][] = [];
  for (const res of results) {
    const [ours, ...peers] = res.runners;
    const line = (label: string, get: (r: RunnerResult) => number | null, gf: number | null) => [
      label,
      fmt(get(ours)),
      fmt(gf),
      ...peers.flatMap((p) => {
        const v = get(p);
        const o = get(ours);
        return [fmt(v), v !== null && o ? fmt(v / o, 2) : 'n/a'];
      }),
    ];
    rows.push(line(res.name + (res.case.kind === 'conv3x3' ? ' fwd+bwd' : ''), (r) => r.totalMs, ours.totalGflops));
    if (res.case.kind !== 'matmul')
      ours.steps.forEach((s, i) => rows.push(line(`  ${s.name}`, (r) => r.steps[i].medianMs, s.gflops)));
  }
  const models: { name: string; unit: string; value: number | null }[] = [];
  for (const m of MODEL_ROWS) {
    if (args.only && !m.name.includes(args.only)) continue;
    const value = await m.measure(lovt);
    models.push({ name: m.name, unit: m.unit, value });
    rows.push([m.name, value === null ? 'not yet available' : `${value.toFixed(2)} ${m.unit}`, '', ...runners.slice(1).flatMap(() => ['', ''])]);
  }
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const show = (r: string[]) => r.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ');
  console.log('\n' + show(header));
  console.log(widths.map((w) => '-'.repeat(w)).join('  '));
  for (const r of rows) console.log(show(r));

  const out = {
    date: new Date().toISOString(),
    device: lovt.description,
    target,
    timing: { warmup: args.warmup, runs: args.runs, statistic: 'median' },
    /** 1-minute load average before and after: other processes skew a CPU-emulated device's times. */
    loadAverage: { before: loadBefore, after: os.loadavg()[0], cpus: os.cpus().length },
    peerErrors,
    cases: results.map((r) => ({
      name: r.name,
      case: r.case,
      flopsPerStep: r.flopsPerStep,
      lovt: r.runners[0],
      peers: Object.fromEntries(r.runners.slice(1).map((p) => [p.runner, p])),
      /** peer median / lovt median for the whole case: > 1 means lovt is faster. */
      speedupVs: r.ratios,
    })),
    models,
  };
  writeFileSync(path.join(here, 'results.json'), JSON.stringify(out, null, 2) + '\n');
  console.log(`\nwrote ${path.relative(process.cwd(), path.join(here, 'results.json'))}`);
}

main().then(
  () => process.exit(0),
  (e) => {
    console.error(e);
    process.exit(1);
  },
);
