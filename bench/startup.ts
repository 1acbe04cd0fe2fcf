// Startup and step time of lovt-tiny's training programs on this machine's
// WebGPU adapter: what `lovt-run train models/lovt-tiny.lovt` spends before
// its first step (front end, planning, Program.create of step/apply/eval) and
// per step afterwards. A benchmark, not a test: nothing asserts on numbers.
//
//   node --import tsx bench/startup.ts [--runs N] [--profile] [--top N] [--plan-only]
//        [--model FILE] [--set KEY=VALUE ...]
//
// Pipeline compilation on lavapipe is cached by Mesa (~/.cache/mesa_shader_cache_db):
// measure a cold start with a fresh MESA_SHADER_CACHE_DIR (pipeline warming on
// helper devices works through that cache; MESA_SHADER_CACHE_DISABLE=true
// turns both off, LOVT_PIPELINE_WARMING=0 only the warming). --profile times every kernel of one step
// (Program.profile: timestamp queries when the adapter has them) and lists
// the slowest; --plan-only prints the kernel / pipeline counts without a GPU.

import { performance } from 'node:perf_hooks';
import type { Graph } from '../compiler/ir.ts';
import { numel } from '../compiler/ir.ts';
import { optimize } from '../compiler/passes/index.ts';
import { planGraph, type ExecutionPlan } from '../compiler/execution-plan.ts';
import { contractionTarget } from '../runtime/device.ts';
import { initState } from '../runtime/init.ts';
import { Program } from '../runtime/executor.ts';
import { StateStore, type HostTensor } from '../runtime/state.ts';
import { count, parseOptions } from './args.ts';
import { LOVT_TINY_FILE } from './lovt-tiny.ts';
import { applyInputs, compile, trainingGraphs } from './model.ts';

interface Args {
  model: string;
  set: Record<string, string>;
  runs: number;
  profile: boolean;
  top: number;
  planOnly: boolean;
  profileFirst: boolean;
}

function parseArgs(argv: string[]): Args {
  const args: Args = { model: LOVT_TINY_FILE, set: {}, runs: 3, profile: false, top: 25, planOnly: false, profileFirst: false };
  parseOptions(argv, {
    '--runs': { meta: 'N', value: (v) => (args.runs = count(v)) },
    '--profile': { flag: () => (args.profile = true) },
    '--top': { meta: 'N', value: (v) => (args.top = count(v)) },
    '--plan-only': { flag: () => (args.planOnly = true) },
    '--profile-first': { flag: () => (args.profileFirst = true) },
    '--model': { meta: 'FILE', value: (v) => (args.model = v) },
    '--set': {
      meta: 'KEY=VALUE',
      value: (kv) => {
        const eq = kv.indexOf('=');
        if (eq <= 0) throw new Error(`--set needs KEY=VALUE, got ${kv}`);
        args.set[kv.slice(0, eq)] = kv.slice(eq + 1);
      },
    },
  });
  // lovt-tiny's vocabulary comes from the data set; without one, a 256-token stand-in.
  if (args.model === LOVT_TINY_FILE) args.set.vocab_size ??= '256';
  return args;
}

const seconds = (ms: number) => `${(ms / 1000).toFixed(2)} s`;

/** Synthetic inputs of the data pipeline's shapes: images ~ N(0,1), token ids in range, 5 sentences of 8 tokens. */
function syntheticInputs(graph: Graph, vocab: number): Record<string, HostTensor> {
  const out: Record<string, HostTensor> = {};
  let s = 12345;
  const rand = () => (s = (s * 1103515245 + 12345) >>> 0) / 2 ** 32;
  for (const [name, id] of Object.entries(graph.inputs)) {
    const n = graph.nodes[id];
    const count = numel(n.shape);
    const T = n.shape[n.shape.length - 1] ?? 1;
    if (n.dtype === 'f32') out[name] = Float32Array.from({ length: count }, () => (rand() + rand() + rand() - 1.5) * 2);
    else if (name === 'input_ids') out[name] = Int32Array.from({ length: count }, () => 1 + Math.floor(rand() * (vocab - 1)));
    else if (name === 'attention_mask') out[name] = Int32Array.from({ length: count }, (_v, i) => (i % T < 42 ? 1 : 0));
    else if (name === 'token_sentence')
      out[name] = Int32Array.from({ length: count }, (_v, i) => (i % T >= 1 && i % T < 41 ? Math.floor(((i % T) - 1) / 8) : -1));
    else out[name] = new Int32Array(count).fill(7);
  }
  return out;
}

function planCounts(name: string, plan: ExecutionPlan): string {
  return `${name.padEnd(6)} ${String(plan.stats.dispatches).padStart(5)} dispatches, ${String(plan.stats.kernels).padStart(4)} pipelines, planned ${(plan.stats.peakBytes / 2 ** 20).toFixed(1)} MiB (no reuse ${(plan.stats.noReuseBytes / 2 ** 20).toFixed(1)} MiB)`;
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  const t0 = performance.now();
  const train = compile(args.model, 'train', args.set);
  const evalModel = compile(args.model, 'eval', args.set);
  const { step, apply, optimizer } = trainingGraphs(train);
  const evalGraph = optimize(evalModel.graph);
  const tFront = performance.now();
  console.log(`front end + autodiff + optimize: ${seconds(tFront - t0)}`);
  const graphs: Record<string, Graph> = { step, apply, eval: evalGraph };

  if (args.planOnly) {
    const all = new Set<string>();
    for (const [name, g] of Object.entries(graphs)) {
      const t = performance.now();
      const plan = planGraph(g, { maxStorageBuffersPerShaderStage: 16 });
      console.log(`${planCounts(name, plan)}  (${(performance.now() - t).toFixed(0)} ms to plan)`);
      for (const k of plan.kernels) all.add(k.wgsl);
    }
    console.log(`distinct pipelines over all programs: ${all.size}`);
    return;
  }

  const { getNodeDevice } = await import('../runtime/platform/node.ts');
  const dev = await getNodeDevice();
  console.log(
    `device: ${dev.description}; MESA_SHADER_CACHE_DISABLE=${process.env.MESA_SHADER_CACHE_DISABLE ?? ''} MESA_SHADER_CACHE_DIR=${process.env.MESA_SHADER_CACHE_DIR ?? ''}`,
  );
  const store = new StateStore(dev);
  const programs: Record<string, Program> = {};
  const all = new Set<string>();
  let createTotal = 0;
  for (const [name, g] of Object.entries(graphs)) {
    const t = performance.now();
    const plan = planGraph(g, dev.limits, { target: contractionTarget(dev) });
    const tPlan = performance.now();
    programs[name] = await Program.create(dev, g, store, { label: name, plan });
    const tCreate = performance.now();
    createTotal += tCreate - t;
    const fresh = plan.kernels.filter((k) => !all.has(k.wgsl));
    for (const k of plan.kernels) all.add(k.wgsl);
    console.log(
      `${planCounts(name, plan)}; plan ${(tPlan - t).toFixed(0)} ms, create ${seconds(tCreate - tPlan)} (${new Set(fresh.map((k) => k.wgsl)).size} new pipelines)`,
    );
  }
  console.log(`Program.create total: ${seconds(createTotal)}; distinct pipelines over all programs: ${all.size}`);

  for (const [name, data] of Object.entries(initState(train.graph, 1))) store.upload(name, data);
  const inputs = syntheticInputs(step, Number(args.set.vocab_size ?? 256));
  if (args.profileFirst) {
    // The first run dispatch by dispatch: where the driver's pipeline compilation goes.
    const first = await programs.step.profile(inputs, true);
    printProfile('first run of the step', first, args.top);
  }
  const times: number[] = [];
  for (let i = 0; i <= args.runs; i++) {
    const t = performance.now();
    const out = await programs.step.run(inputs, ['loss.total']);
    times.push(performance.now() - t);
    if (i === 0) {
      console.log(`first step ${times[0].toFixed(0)} ms, loss.total = ${out['loss.total'][0]}`);
      console.log(
        `startup to the end of the first step: ${seconds(performance.now() - t0)} (front end, planning, Program.create${args.profileFirst ? ', the profiled first run' : ''}, first step)`,
      );
    }
  }
  const steady = times.slice(1).sort((a, b) => a - b);
  console.log(
    `step (batch ${step.nodes[step.inputs.image]?.shape[0] ?? '?'}): median ${steady[steady.length >> 1].toFixed(0)} ms over ${steady.length} runs (min ${steady[0].toFixed(0)})`,
  );
  const scalars = applyInputs(1, 1e-4, optimizer);
  let t = performance.now();
  await programs.apply.run(scalars, []);
  await programs.apply.run(scalars, []);
  console.log(`apply: ${((performance.now() - t) / 2).toFixed(0)} ms`);
  const evalInputs = syntheticInputs(evalGraph, Number(args.set.vocab_size ?? 256));
  t = performance.now();
  await programs.eval.run(
    evalInputs,
    Object.keys(evalGraph.outputs).filter((n) => n.startsWith('loss.')),
  );
  console.log(`eval forward: ${(performance.now() - t).toFixed(0)} ms`);

  if (args.profile) printProfile('one step', await programs.step.profile(inputs), args.top);
  for (const p of Object.values(programs)) p.destroy();
  store.destroy();
}

/** Slowest kernels by name, then by family. */
function printProfile(what: string, prof: { method: string; kernels: { name: string; ms: number }[] }, top: number): void {
  const total = prof.kernels.reduce((s, k) => s + k.ms, 0);
  console.log(`\nprofile of ${what} (${prof.method}): ${total.toFixed(1)} ms in ${prof.kernels.length} dispatches`);
  const byName = new Map<string, { ms: number; n: number }>();
  for (const k of prof.kernels) {
    const e = byName.get(k.name) ?? { ms: 0, n: 0 };
    e.ms += k.ms;
    e.n++;
    byName.set(k.name, e);
  }
  const rows = [...byName].sort((a, b) => b[1].ms - a[1].ms).slice(0, top);
  for (const [name, e] of rows) console.log(`${e.ms.toFixed(2).padStart(9)} ms ${((100 * e.ms) / total).toFixed(1).padStart(5)}%  ×${e.n}  ${name}`);
  const kinds = new Map<string, number>();
  for (const k of prof.kernels) {
    const kind = k.name.replace(/_[0-9x]+(_.*)?$/, '').replace(/_scalar$/, '');
    kinds.set(kind, (kinds.get(kind) ?? 0) + k.ms);
  }
  console.log('\nby kernel family:');
  for (const [kind, ms] of [...kinds].sort((a, b) => b[1] - a[1]).slice(0, 15))
    console.log(`${ms.toFixed(2).padStart(9)} ms ${((100 * ms) / total).toFixed(1).padStart(5)}%  ${kind}`);
}

main().then(
  () => process.exit(0),
  (e) => {
    console.error(e instanceof Error ? e.stack : e);
    process.exit(1);
  },
);
