// Shared by the engine's GPU tests (not a test file itself): runs a graph on the
// device and compares every output and state update with the float64
// reference interpreter (compiler/reference.ts).

import type { DType, Graph, Shape } from '../../compiler/ir.ts';
import { numel, shapeStr } from '../../compiler/ir.ts';
import { Rng } from '../../compiler/random.ts';
import { evaluate } from '../../compiler/reference.ts';
import { initState } from '../../runtime/init.ts';
import { runGraph, type ProgramOptions } from '../../runtime/executor.ts';
import type { HostTensor } from '../../runtime/state.ts';
import { getNodeDevice } from '../../runtime/platform/node.ts';

export interface Tolerance {
  rtol?: number;
  atol?: number;
}

/**
 * The length of the longest chain of ops ending at each node (leaves 0): the
 * number of roundings an f32 evaluation can pass to it, for error bounds.
 */
export function opDepths(graph: Graph): number[] {
  const d: number[] = [];
  for (const n of graph.nodes) d.push(n.inputs.reduce((m, i) => Math.max(m, d[i] + 1), 0));
  return d;
}

/**
 * The float64 state a reference run of training programs starts from: the
 * forward graph's initial state (runtime/init.ts with `seed`), and zeros for
 * the rest of the programs' state (gradient accumulators, optimizer moments).
 */
export function initialTrainingState(forward: Graph, programs: Graph[], seed: number): Record<string, Float64Array> {
  const state: Record<string, Float64Array> = {};
  for (const g of programs) for (const s of Object.values(g.state)) state[s.name] = new Float64Array(numel(s.shape));
  for (const [name, v] of Object.entries(initState(forward, seed))) state[name] = Float64Array.from(v);
  return state;
}

/** Throws naming the first element where |got - want| > atol + rtol·|want|. */
export function assertClose(what: string, got: ArrayLike<number>, want: ArrayLike<number>, { rtol = 1e-5, atol = 1e-6 }: Tolerance = {}): void {
  if (got.length !== want.length) throw new Error(`${what}: ${got.length} values, expected ${want.length}`);
  for (let i = 0; i < want.length; i++) {
    const g = got[i];
    const w = want[i];
    if (Number.isNaN(w) && Number.isNaN(g)) continue;
    if (g === w) continue; // also covers equal infinities
    if (!(Math.abs(g - w) <= atol + rtol * Math.abs(w))) throw new Error(`${what}[${i}]: got ${g}, expected ${w} (|diff| ${Math.abs(g - w)})`);
  }
}

/** Deterministic test data: uniform in [low, high) (f32) or integers in [low, high) (i32). */
export function randomTensor(rng: Rng, shape: Shape, dtype: DType = 'f32', low = -2, high = 2): HostTensor {
  const n = numel(shape);
  if (dtype === 'i32') return Int32Array.from({ length: n }, () => low + Math.floor(rng.uniform() * (high - low)));
  return Float32Array.from({ length: n }, () => low + rng.uniform() * (high - low));
}

/** Random values for every input and state tensor of `graph` (override any by name). */
export function randomFeeds(
  graph: Graph,
  seed: number,
  overrides: Record<string, HostTensor> = {},
): { inputs: Record<string, HostTensor>; state: Record<string, HostTensor> } {
  const rng = new Rng(seed);
  const inputs: Record<string, HostTensor> = {};
  const state: Record<string, HostTensor> = {};
  for (const [name, id] of Object.entries(graph.inputs)) inputs[name] = overrides[name] ?? randomTensor(rng, graph.nodes[id].shape, graph.nodes[id].dtype);
  for (const s of Object.values(graph.state)) state[s.name] = overrides[s.name] ?? randomTensor(rng, s.shape, s.dtype);
  return { inputs, state };
}

/**
 * Runs `graph` on the device and checks every output and state update against
 * the reference. Returns the device results for further checks.
 */
export async function checkAgainstReference(
  graph: Graph,
  feeds: { inputs: Record<string, HostTensor>; state?: Record<string, HostTensor> },
  tol: Tolerance & { per?: Record<string, Tolerance> } = {},
  opts: ProgramOptions = {},
): Promise<Awaited<ReturnType<typeof runGraph>>> {
  const dev = await getNodeDevice();
  const got = await runGraph(dev, graph, feeds, opts);
  const want = evaluate(graph, feeds);
  for (const [name, id] of Object.entries(graph.outputs)) {
    const n = graph.nodes[id];
    assertClose(`output ${name} (${n.op} ${n.dtype}${shapeStr(n.shape)})`, got.outputs[name], want.outputs[name], { ...tol, ...tol.per?.[name] });
  }
  for (const name of Object.keys(graph.updates)) assertClose(`update ${name}`, got.state[name], want.updates[name], { ...tol, ...tol.per?.[name] });
  return got;
}
