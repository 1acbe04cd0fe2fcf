// Finite or stop, on the host: weights that come in (--init, --weights), go out
// (checkpoints, export) or feed a model (batches) are refused when they hold a
// NaN or an infinity, naming the tensor. The device side is the training
// programs' own check (compiler/train-program.ts, NONFINITE_OUTPUT).

import { stridesOf, type Shape } from '../../compiler/ir.ts';
import type { HostTensor } from '../safetensors.ts';

/** How many elements of `data` are NaN or ±inf, and the flat index of the first (-1 if none). */
export function countNonFinite(data: ArrayLike<number>): { count: number; first: number } {
  let count = 0;
  let first = -1;
  for (let i = 0; i < data.length; i++) {
    if (!Number.isFinite(data[i]) && count++ === 0) first = i;
  }
  return { count, first };
}

/** `name[i, j, k]` for flat index `flat` of a row-major tensor of `shape`. */
export function elementName(name: string, shape: Shape, flat: number): string {
  if (shape.length === 0) return name;
  return `${name}[${stridesOf(shape)
    .map((s, k) => Math.floor(flat / s) % shape[k])
    .join(', ')}]`;
}

/** "name (k of n values)" for each f32 tensor holding NaN or ±inf (integer tensors cannot). */
export function nonFiniteTensors(tensors: Iterable<[string, HostTensor]>): string[] {
  const out: string[] = [];
  for (const [name, t] of tensors) {
    if (t.dtype !== 'f32') continue;
    const { count } = countNonFinite(t.data);
    if (count) out.push(`${name} (${count.toLocaleString('en-US')} of ${t.data.length.toLocaleString('en-US')} values)`);
  }
  return out;
}

/** Throws `${what} has NaN or infinite values in N tensors: a (k of n values), ...` when any tensor does. */
export function refuseNonFinite(tensors: Iterable<[string, HostTensor]>, what: string): void {
  const bad = nonFiniteTensors(tensors);
  if (!bad.length) return;
  const list = bad.slice(0, 8).join(', ') + (bad.length > 8 ? `, … (${bad.length - 8} more)` : '');
  throw new Error(`${what} has NaN or infinite values in ${bad.length} tensor${bad.length > 1 ? 's' : ''}: ${list}`);
}
