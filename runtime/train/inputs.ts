// A batch checked against the model's inputs before it reaches the device: names,
// shapes and dtypes (matchBatch), then values (checkBatchValues): no NaN or
// infinity in a float input, and every integer input that indexes a table (a
// gather: token ids into an embedding) inside the table's rows. Out of range, a
// GPU gather reads some other row or zeros, and the loss is finite and wrong.
// `lovt-run loss` checks its --batch file with checkBatch; the trainer checks
// each batch's values.

import type { Graph } from '../../compiler/ir.ts';
import type { HostTensor } from '../safetensors.ts';
import { countNonFinite, elementName } from './finite.ts';
import { describeDiff, diffTensors, hasDifferences, type ExpectedTensor } from './weights.ts';

/** An i32 input whose values are row indices: valid values are 0 ≤ v < rows. */
interface IndexBound {
  rows: number;
  /** What it indexes, for messages (a state name when the table is one). */
  table: string;
}

/** Ops that hand an integer tensor's values on unchanged (rearranged at most). */
const VALUE_PRESERVING = new Set(['reshape', 'transpose', 'expand', 'slice', 'concat', 'stop_gradient']);

const boundsCache = new WeakMap<Graph, Map<string, IndexBound>>();

/** For each i32 input of `graph` that indexes rows (gather indices, scatter_add targets), the number of rows. */
export function inputIndexBounds(graph: Graph): Map<string, IndexBound> {
  const cached = boundsCache.get(graph);
  if (cached) return cached;
  const consumers: number[][] = graph.nodes.map(() => []);
  for (const n of graph.nodes) for (const i of new Set(n.inputs)) consumers[i].push(n.id);
  const bounds = new Map<string, IndexBound>();
  for (const [name, id] of Object.entries(graph.inputs)) {
    if (graph.nodes[id].dtype !== 'i32') continue;
    const seen = new Set([id]);
    const work = [id];
    while (work.length) {
      const v = work.pop()!;
      for (const c of consumers[v]) {
        const n = graph.nodes[c];
        let bound: IndexBound | undefined;
        if (n.op === 'gather' && n.inputs[1] === v) {
          const table = graph.nodes[n.inputs[0]];
          bound = { rows: table.shape[0], table: table.name ?? `a table of ${table.shape[0]} rows` };
        } else if (n.op === 'scatter_add' && n.inputs[0] === v)
          bound = { rows: n.attrs.numRows as number, table: `the ${n.attrs.numRows} rows of a scatter_add` };
        else if (VALUE_PRESERVING.has(n.op) && !seen.has(c)) {
          seen.add(c);
          work.push(c);
        }
        const prev = bounds.get(name);
        if (bound && (!prev || bound.rows < prev.rows)) bounds.set(name, bound);
      }
    }
  }
  boundsCache.set(graph, bounds);
  return bounds;
}

/**
 * Refuses input values the model cannot compute on: NaN or ±inf in an f32
 * input, an index outside its table in an i32 one. `what` names the batch.
 */
export function checkBatchValues(graph: Graph, inputs: Record<string, ArrayLike<number>>, what: string): void {
  const bounds = inputIndexBounds(graph);
  for (const [name, id] of Object.entries(graph.inputs)) {
    const data = inputs[name];
    if (!data) continue;
    const { shape, dtype } = graph.nodes[id];
    if (dtype === 'f32') {
      const { count, first } = countNonFinite(data);
      if (count)
        throw new Error(
          `${what}: input '${name}' has ${count.toLocaleString('en-US')} NaN or infinite values (the first: ${elementName(name, shape, first)} = ${data[first]})`,
        );
      continue;
    }
    const bound = bounds.get(name);
    if (!bound) continue;
    let bad = 0;
    let first = -1;
    for (let i = 0; i < data.length; i++) if (!(data[i] >= 0 && data[i] < bound.rows) && bad++ === 0) first = i;
    if (bad) {
      const more = bad > 1 ? ` (and ${bad - 1} more of ${name})` : '';
      throw new Error(
        `${what}: ${elementName(name, shape, first)} = ${data[first]} is out of range: ${name} indexes the rows of ${bound.table}, ` +
          `so with vocabulary size ${bound.rows} it must be in 0..${bound.rows - 1}${more}`,
      );
    }
  }
}

/**
 * The batch's tensors by input name, checked against the model's inputs (every
 * missing, unexpected and mis-shaped tensor named at once; integer and float
 * dtypes convert) and then by value (checkBatchValues). `skip`: inputs the
 * caller feeds itself (the dropout seed).
 */
export function checkBatch(graph: Graph, batch: Map<string, HostTensor>, what: string, skip: string[] = []): Record<string, Float32Array | Int32Array> {
  const expected: ExpectedTensor[] = Object.entries(graph.inputs)
    .filter(([name]) => !skip.includes(name))
    .map(([name, id]) => ({ name, shape: graph.nodes[id].shape, dtype: graph.nodes[id].dtype }));
  const d = diffTensors(expected, batch);
  if (hasDifferences(d))
    throw new Error(
      `${what} does not match the model's inputs: ${describeDiff(d, { missing: 'model inputs not in the file', unexpected: 'in the file, not a model input' })}`,
    );
  const inputs: Record<string, Float32Array | Int32Array> = {};
  for (const [name, m] of d.matched) inputs[name] = m.tensor.data;
  checkBatchValues(graph, inputs, what);
  return inputs;
}
