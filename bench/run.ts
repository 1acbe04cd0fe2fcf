// `npm run bench`: lovt's contraction kernels and a whole training step
// (models/bench/resnet-contrastive.lovt) against TF.js on the same adapter, in
// one process, then lovt-tiny's training throughput, a U-Net training step
// (bench/unet.ts) and the evaluation's linear probe. Prints a table and writes
// bench/results.json.
//   npm run bench -- [--runs N] [--warmup N] [--only SUBSTRING] [--no-peers]
// Each step is timed from dispatch until the device reports the work done
// (lovt: queue.onSubmittedWorkDone; TF.js WebGPU: its command encoder flushed,
// then the same; TF.js WASM: dataSync), after warm-up runs; the median of the
// timed runs is reported. Before timing, the output of each lovt kernel (and the
// training step's loss) is checked against float64 (bench/verify.ts): a wrong one
// is refused (its row is marked failed and not timed) and the exit code is 1.
// See bench/README.md for how to read the output.

import { writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { GraphBuilder } from '../compiler/builder.ts';
import type { Graph, Node } from '../compiler/ir.ts';
import type { Kernel } from '../compiler/codegen/kernel.ts';
import { renderMatmul } from '../compiler/codegen/matmul.ts';
import { renderConv2d, renderConv2dGradInput, renderConv2dGradWeight } from '../compiler/codegen/conv.ts';
import type { ContractionTarget } from '../compiler/codegen/gemm.ts';
import { type LovtDevice, contractionTarget } from '../runtime/device.ts';
import { getNodeDevice, nodeGPU } from '../runtime/platform/node.ts';
import { prepareKernel } from '../test/gpu/kernel-runner.ts';
import { count, parseOptions } from './args.ts';
import { lovtTinyThroughput, type ThroughputResult } from './lovt-tiny.ts';
import { UNET_ROW, type UNetStepResult, unetStep } from './unet.ts';
import { linearProbeThroughput, type LinearProbeResult } from './linear-probe.ts';
import { type BenchCase, type BenchRunner, type PreparedCase, stepNames, tfjsWasm, tfjsWebGPU } from './peers.ts';
import { lovtTrainStep, type ResNetContrastiveCase, trainStepFlops, verifyTrainStep } from './resnet-contrastive.ts';
import { checkSampled, convReferences, matmulReference, type SampledReference } from './verify.ts';

const here = path.dirname(fileURLToPath(import.meta.url));

interface Args {
  runs: number;
  warmup: number;
  only: string | null;
  peers: boolean;
}

function parseArgs(argv: string[]): Args {
  const args: Args = { runs: 5, warmup: 1, only: null, peers: true };
  parseOptions(argv, {
    '--runs': { meta: 'N', value: (v) => (args.runs = count(v)) },
    '--warmup': { meta: 'N', value: (v) => (args.warmup = count(v, 0)) },
    '--only': { meta: 'SUBSTRING', value: (v) => (args.only = v) },
    '--no-peers': { flag: () => (args.peers = false) },
  });
  return args;
}

const CASES: { name: string; c: BenchCase }[] = [
  { name: 'matmul 1024x1024x1024', c: { kind: 'matmul', M: 1024, K: 1024, N: 1024 } },
  { name: 'conv3x3 [8,64,56,56] 64->64', c: { kind: 'conv3x3', N: 8, C: 64, H: 56, W: 56, O: 64 } },
  { name: 'conv3x3 [8,256,14,14] 256->256', c: { kind: 'conv3x3', N: 8, C: 256, H: 14, W: 14, O: 256 } },
  // models/bench/resnet-contrastive.lovt: 2×16 images of 64×64, ResNet-18 topology at width 16.
  { name: 'training step: small ResNet + contrastive loss', c: { kind: 'resnet-contrastive', batch: 16, imageSize: 64, width: 16 } },
];

/** FLOPs of each step of a case (the three conv steps cost the same; a training step: the compiler's 3× forward estimate). */
function stepFlops(c: BenchCase): number {
  if (c.kind === 'matmul') return 2 * c.M * c.K * c.N;
  if (c.kind === 'conv3x3') return 2 * c.N * c.O * c.H * c.W * c.C * 9;
  return trainStepFlops(c);
}

function random(n: number): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = Math.random() * 2 - 1;
  return a;
}

/**
 * lovt's kernels for a case, rendered for this device's target, each with the
 * float64 reference of its output on given inputs (bench/verify.ts).
 */
function lovtKernels(
  c: Exclude<BenchCase, ResNetContrastiveCase>,
  target: ContractionTarget,
  maxWorkgroupsPerDim: number,
): { kernel: Kernel; graph: Graph; node: Node; reference: (inputs: Float32Array[]) => SampledReference }[] {
  const g = new GraphBuilder();
  const opts = { maxWorkgroupsPerDim, target };
  if (c.kind === 'matmul') {
    const z = g.emit('matmul', [g.input('a', [c.M, c.K]), g.input('b', [c.K, c.N])]);
    return [{ kernel: renderMatmul(g.graph, g.node(z), opts), graph: g.graph, node: g.node(z), reference: ([a, b]) => matmulReference(a, b, c.M, c.K, c.N) }];
  }
  const attrs = { stride: 1, padding: 1, dilation: 1, groups: 1 };
  const x = g.input('x', [c.N, c.C, c.H, c.W]);
  const w = g.input('w', [c.O, c.C, 3, 3]);
  const dy = g.input('dy', [c.N, c.O, c.H, c.W]);
  const y = g.node(g.emit('conv2d', [x, w], attrs));
  const gi = g.node(g.emit('conv2d_grad_input', [dy, w], { ...attrs, inputSize: [c.H, c.W] }));
  const gw = g.node(g.emit('conv2d_grad_weight', [x, dy], { ...attrs, kernelSize: [3, 3] }));
  const shape = { N: c.N, C: c.C, H: c.H, W: c.W, O: c.O, k: 3, pad: 1 };
  return [
    { kernel: renderConv2d(g.graph, y, opts), graph: g.graph, node: y, reference: ([xv, wv]) => convReferences(shape, { x: xv, w: wv }).forward },
    {
      kernel: renderConv2dGradInput(g.graph, gi, opts),
      graph: g.graph,
      node: gi,
      reference: ([dyv, wv]) => convReferences(shape, { dy: dyv, w: wv }).gradInput,
    },
    {
      kernel: renderConv2dGradWeight(g.graph, gw, opts),
      graph: g.graph,
      node: gw,
      reference: ([xv, dyv]) => convReferences(shape, { x: xv, dy: dyv }).gradWeight,
    },
  ];
}

function lovtRunner(lovt: LovtDevice, target: ContractionTarget): BenchRunner {
  return {
    name: 'lovt',
    async prepare(c) {
      if (c.kind === 'resnet-contrastive') return { ...(await lovtTrainStep(lovt, c)), verify: () => verifyTrainStep(lovt, c) };
      const kernels = lovtKernels(c, target, lovt.limits.maxComputeWorkgroupsPerDimension);
      const names = stepNames(c);
      const inputs = kernels.map(({ graph, node }) => node.inputs.map((i) => random(graph.nodes[i].shape.reduce((a, b) => a * b, 1))));
      const prepared = await Promise.all(
        kernels.map(({ kernel, node }, i) =>
          prepareKernel(
            lovt.device,
            kernel,
            inputs[i],
            node.shape.reduce((a, b) => a * b, 1),
          ),
        ),
      );
      const stepName = (i: number) => `${names[i]} (${kernels[i].kernel.name})`;
      return {
        steps: prepared.map((p, i) => ({ name: stepName(i), run: () => p.run() })),
        async verify() {
          const errors: string[] = [];
          for (const [i, p] of prepared.entries()) {
            await p.run();
            const wrong = checkSampled(stepName(i), await p.read(), kernels[i].reference(inputs[i]));
            if (wrong) errors.push(wrong);
          }
          return errors;
        },
        dispose: () => prepared.forEach((p) => p.destroy()),
      };
    },
  };
}

interface StepResult {
  name: string;
  medianMs: number | null;
  gflops: number | null;
  /** Why the runner cannot run this step (medianMs is null). */
  unavailable?: string;
}

interface RunnerResult {
  runner: string;
  steps: StepResult[];
  /** Whole case (all steps): null when a step is missing. */
  totalMs: number | null;
  totalGflops: number | null;
  /** Model cases: the first forward pass's loss and the trainable parameter count (the same-computation check). */
  initialLoss?: number;
  parameters?: number;
  /** Model cases that train: the loss after `trainedSteps` steps (the first in prepare, then warm-up and timed ones). */
  finalLoss?: number;
  trainedSteps?: number;
  /** What bench/verify.ts found wrong in the output: the runner was then not timed. */
  wrong?: string[];
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
    // The correctness gate: a runner whose output is wrong is refused, none of its steps is timed.
    const wrong: string[][] = [];
    for (const p of prepared) {
      await p.activate?.();
      const errors = (await p.verify?.()) ?? [];
      wrong.push(errors);
      if (errors.length) p.steps = p.steps.map((s) => ({ name: s.name, run: null, unavailable: 'wrong output, not timed' }));
    }
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
    // Model cases: every runner that trains has now taken the same steps on the same inputs.
    const finalLosses: (number | undefined)[] = [];
    for (const [r, p] of prepared.entries()) {
      await p.activate?.();
      finalLosses.push(wrong[r].length ? undefined : await p.loss?.());
    }
    const flops = stepFlops(c);
    return prepared.map((p, r) => {
      const steps = p.steps.map((s, i) => {
        const ms = s.run ? median(times[r][i]) : null;
        return { name: s.name, medianMs: ms, gflops: ms ? flops / ms / 1e6 : null, unavailable: s.unavailable };
      });
      const totalMs = p.steps.every((s) => s.run) ? median(totals[r]) : null;
      return {
        runner: runners[r].name,
        steps,
        totalMs,
        totalGflops: totalMs ? (flops * steps.length) / totalMs / 1e6 : null,
        initialLoss: p.initialLoss,
        finalLoss: finalLosses[r],
        trainedSteps: finalLosses[r] === undefined ? undefined : 1 + args.warmup + args.runs,
        parameters: p.parameters,
        ...(wrong[r].length ? { wrong: wrong[r] } : {}),
      };
    });
  } finally {
    for (const p of prepared) p.dispose();
  }
}

/** lovt-only rows: whole-model measurements that no peer runs. */
const THROUGHPUT_ROW = 'lovt-tiny training throughput';
const PROBE_ROW = 'frozen-feature linear probe';

const fmt = (x: number | null, digits = 1) => (x === null ? 'n/a' : x.toFixed(digits));

/**
 * The model-case lines under the table: steps/s, the parameter counts, the
 * first loss and the loss after training of every runner (the same weights and
 * inputs, so they agree when the runners compute the same thing), and why a
 * runner has no time.
 */
function checkLines(name: string, rs: RunnerResult[]): string[] {
  const [ours] = rs;
  const unavailable = (r: RunnerResult) => r.steps.filter((s) => s.unavailable).map((s) => `${s.name}: ${s.unavailable}`);
  if (ours.initialLoss === undefined) return rs.flatMap((r) => unavailable(r).map((u) => `${name}, ${r.runner} ${u} (n/a)`));
  const loss = (r: RunnerResult, value: number | undefined, mine: number | undefined) =>
    value === undefined
      ? ''
      : value.toFixed(6) +
        (r === ours || mine === undefined
          ? ''
          : ` (difference ${Math.abs(value - mine).toExponential(1)}, relative ${(Math.abs(value - mine) / Math.abs(mine)).toExponential(1)})`);
  const lines = [`\n${name}:`];
  for (const r of rs) {
    lines.push(
      `  ${r.runner.padEnd(12)} ${r.totalMs === null ? 'n/a' : `${r.totalMs.toFixed(1)} ms/step = ${(1000 / r.totalMs).toFixed(2)} steps/s`}, ` +
        `${r.parameters?.toLocaleString('en-US')} trainable parameters, initial loss ${loss(r, r.initialLoss, ours.initialLoss)}` +
        (r.finalLoss === undefined ? '' : `, after ${r.trainedSteps} steps ${loss(r, r.finalLoss, ours.finalLoss)}`) +
        unavailable(r)
          .map((u) => `; cannot train (${u})`)
          .join(''),
    );
  }
  return lines;
}

async function main(): Promise<number> {
  const args = parseArgs(process.argv.slice(2));
  const gpu = nodeGPU();
  const lovt = await getNodeDevice();
  const target = contractionTarget(lovt);
  console.log(`device: ${lovt.description}   kernel family: ${target.kind}${target.subgroupSize ? ` (subgroup ${target.subgroupSize})` : ''}`);
  const loadBefore = os.loadavg()[0];
  console.log(
    `timing: ${args.warmup} warm-up + median of ${args.runs} runs, waiting for completion; load average ${loadBefore.toFixed(2)} on ${os.cpus().length} CPUs\n`,
  );

  const runners: BenchRunner[] = [lovtRunner(lovt, target)];
  const peerErrors: Record<string, string> = {};
  if (args.peers) {
    for (const [name, make] of [
      ['tfjs-webgpu', () => tfjsWebGPU(lovt, gpu)],
      ['tfjs-wasm', () => tfjsWasm()],
    ] as const) {
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
    process.stdout.write(` ${rs.map((r) => `${r.runner} ${r.wrong ? 'WRONG OUTPUT' : `${fmt(r.totalMs)} ms`}`).join(', ')}\n`);
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
    rows.push(
      line(res.name + (res.case.kind === 'conv3x3' ? ' fwd+bwd' : '') + (ours.wrong ? ' — FAILED: wrong output' : ''), (r) => r.totalMs, ours.totalGflops),
    );
    if (res.case.kind === 'conv3x3') ours.steps.forEach((s, i) => rows.push(line(`  ${s.name}`, (r) => r.steps[i].medianMs, s.gflops)));
  }
  let throughput: ThroughputResult | null = null;
  if (!args.only || THROUGHPUT_ROW.includes(args.only)) {
    process.stdout.write(`  ${THROUGHPUT_ROW} ...`);
    throughput = await lovtTinyThroughput(lovt, args);
    process.stdout.write(` ${throughput.samplesPerSecond.toFixed(2)} samples/s\n`);
    rows.push([
      `${THROUGHPUT_ROW} (batch ${throughput.batch}, samples/s)`,
      throughput.samplesPerSecond.toFixed(2),
      '',
      ...runners.slice(1).flatMap(() => ['', '']),
    ]);
  }
  let unet: UNetStepResult | null = null;
  if (!args.only || UNET_ROW.includes(args.only)) {
    process.stdout.write(`  ${UNET_ROW} ...`);
    unet = await unetStep(lovt, args);
    process.stdout.write(` ${unet.samplesPerSecond.toFixed(2)} samples/s\n`);
    rows.push([
      `${UNET_ROW} (${unet.model}, batch ${unet.batch}, ${unet.imageSize} px, samples/s)`,
      unet.samplesPerSecond.toFixed(2),
      '',
      ...runners.slice(1).flatMap(() => ['', '']),
    ]);
  }
  let probe: LinearProbeResult | null = null;
  if (!args.only || PROBE_ROW.includes(args.only)) {
    process.stdout.write(`  ${PROBE_ROW} ...`);
    probe = await linearProbeThroughput(lovt, args);
    process.stdout.write(` ${probe.samplesPerSecond.toFixed(1)} samples/s\n`);
    rows.push([`${PROBE_ROW} (batch ${probe.batch}, samples/s)`, probe.samplesPerSecond.toFixed(1), '', ...runners.slice(1).flatMap(() => ['', ''])]);
  }
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const show = (r: string[]) => r.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ');
  console.log('\n' + show(header));
  console.log(widths.map((w) => '-'.repeat(w)).join('  '));
  for (const r of rows) console.log(show(r));
  for (const res of results) for (const line of checkLines(res.name, res.runners)) console.log(line);
  const wrong = results.flatMap((res) => res.runners.flatMap((r) => (r.wrong ?? []).map((w) => `${res.name}, ${r.runner}: ${w}`)));
  if (wrong.length)
    console.log(
      `\nREFUSED: ${wrong.length} output${wrong.length > 1 ? 's disagree' : ' disagrees'} with float64; those rows were not timed:\n  ${wrong.join('\n  ')}`,
    );
  if (throughput)
    console.log(
      `\n${THROUGHPUT_ROW}: ${throughput.samplesPerSecond.toFixed(2)} samples/s (median step ${throughput.medianStepMs.toFixed(0)} ms over ${throughput.timedSteps} steps ` +
        `after ${throughput.warmupSteps} warm-up, data loading included; ${throughput.data}); ` +
        `device only: ${throughput.deviceStepMs.toFixed(0)} ms/step = ${((1000 * throughput.batch) / throughput.deviceStepMs).toFixed(2)} samples/s ` +
        `(${throughput.uncheckedDeviceStepMs.toFixed(0)} ms without the NaN/inf checks)`,
    );
  if (probe)
    console.log(
      `\n${PROBE_ROW}: ${probe.samplesPerSecond.toFixed(1)} samples/s (LinearSegmentation on cached layer4 features, ${probe.steps} steps of batch ${probe.batch} ` +
        `in ${probe.trainSeconds.toFixed(2)} s over ${probe.epochs} epochs, validation not timed; ${probe.data})`,
    );

  if (unet)
    console.log(
      `\n${UNET_ROW}: ${unet.samplesPerSecond.toFixed(2)} samples/s (${unet.model}, ResNet-18 width 32, batch ${unet.batch}, ${unet.imageSize} px; ` +
        `median step ${unet.medianStepMs.toFixed(0)} ms over ${unet.timedSteps} steps after ${unet.warmupSteps} warm-up, device only; loss ${unet.finalLoss.toFixed(4)})`,
    );

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
    lovtTinyThroughput: throughput,
    unetStep: unet,
    linearProbe: probe,
  };
  writeFileSync(path.join(here, 'results.json'), JSON.stringify(out, null, 2) + '\n');
  console.log(`\nwrote ${path.relative(process.cwd(), path.join(here, 'results.json'))}`);
  return wrong.length ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (e) => {
    console.error(e);
    process.exit(1);
  },
);
