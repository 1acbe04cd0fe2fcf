// Layout ops: data movement without arithmetic. Each is an index map from an
// output element to the input element it copies (codegen/layout.ts), so they
// fuse into any elementwise group; an unfused reshape is a view of its input.

import { numel, shapeStr, stridesOf } from '../ir.ts';
import { type OpTablePart, NO_FLOPS, broadcastShapes, need, normAxis, unbroadcast } from './def.ts';
import { broadcastOffsets, gatherAt, stridedOffsets, walk } from './float64.ts';

export const LAYOUT_DEFS = {
  reshape: {
    kind: 'layout',
    arity: 1,
    view: true,
    type: (ins, a) => {
      need(
        numel(a.shape) === numel(ins[0].shape),
        `cannot reshape ${shapeStr(ins[0].shape)} (${numel(ins[0].shape)} elements) to ${shapeStr(a.shape)} (${numel(a.shape)} elements)`,
      );
      return { shape: a.shape, dtype: ins[0].dtype };
    },
    grad: { vjp: ({ b, g, x }) => [b.reshape(g, b.node(x[0]).shape)] },
    eval: ({ ins }) => Float64Array.from(ins[0]),
    flops: NO_FLOPS,
  },
  transpose: {
    kind: 'layout',
    arity: 1,
    type: (ins, a) => {
      const perm = a.perm;
      const r = ins[0].shape.length;
      need(perm.length === r && [...perm].sort((x, y) => x - y).every((p, i) => p === i), `transpose permutation [${perm}] does not fit rank ${r}`);
      return { shape: perm.map((p) => ins[0].shape[p]), dtype: ins[0].dtype };
    },
    grad: {
      vjp: ({ b, g, node }) => {
        const perm = node.attrs.perm;
        const inverse = new Array(perm.length);
        perm.forEach((p, k) => (inverse[p] = k));
        return [b.transpose(g, inverse)];
      },
    },
    eval: ({ node, ins, shapes }) => {
      const xs = stridesOf(shapes[0]);
      return gatherAt(
        ins[0],
        stridedOffsets(
          node.shape,
          node.attrs.perm.map((p) => xs[p]),
        ),
      );
    },
    flops: NO_FLOPS,
  },
  expand: {
    kind: 'layout',
    arity: 1,
    type: (ins, a) => {
      const b = broadcastShapes(ins[0].shape, a.shape);
      need(shapeStr(b) === shapeStr(a.shape), `cannot expand ${shapeStr(ins[0].shape)} to ${shapeStr(a.shape)}`);
      return { shape: a.shape, dtype: ins[0].dtype };
    },
    grad: { vjp: ({ b, g, x }) => [unbroadcast(b, g, b.node(x[0]).shape)] },
    eval: ({ node, ins, shapes }) => gatherAt(ins[0], broadcastOffsets(shapes[0], node.shape)),
    flops: NO_FLOPS,
  },
  slice: {
    kind: 'layout',
    arity: 1,
    type: (ins, a) => {
      const x = ins[0].shape;
      const { starts, ends } = a;
      need(starts.length === x.length && ends.length === x.length, `slice needs ${x.length} starts and ends`);
      return {
        shape: x.map((d, i) => {
          need(0 <= starts[i] && starts[i] <= ends[i] && ends[i] <= d, `slice ${starts[i]}:${ends[i]} is out of range for dimension ${i} of ${shapeStr(x)}`);
          return ends[i] - starts[i];
        }),
        dtype: ins[0].dtype,
      };
    },
    grad: {
      vjp: ({ b, g, x, node }) => {
        const xs = b.node(x[0]).shape;
        const { starts, ends } = node.attrs;
        return [b.emit('pad', [g], { pads: xs.flatMap((d, k) => [starts[k], d - ends[k]]), value: 0 })];
      },
    },
    eval: ({ node, ins, shapes }) => {
      const xs = stridesOf(shapes[0]);
      const offset = node.attrs.starts.reduce((acc, s, k) => acc + s * xs[k], 0);
      return gatherAt(ins[0], stridedOffsets(node.shape, xs, offset));
    },
    flops: NO_FLOPS,
  },
  concat: {
    kind: 'layout',
    arity: 'variadic',
    type: (ins, a) => {
      need(ins.length >= 1, 'concat needs at least one input');
      const axis = normAxis(a.axis, ins[0].shape.length);
      const out = [...ins[0].shape];
      for (const v of ins.slice(1)) {
        need(
          v.shape.length === out.length && v.shape.every((d, i) => i === axis || d === out[i]),
          `concat along axis ${axis}: ${shapeStr(ins[0].shape)} and ${shapeStr(v.shape)} differ off that axis`,
        );
        need(v.dtype === ins[0].dtype, `concat of ${ins[0].dtype} and ${v.dtype}`);
        out[axis] += v.shape[axis];
      }
      return { shape: out, dtype: ins[0].dtype };
    },
    grad: {
      vjp: ({ b, g, x, node, need }) => {
        const ys = node.shape;
        const axis = normAxis(node.attrs.axis, ys.length);
        let at = 0;
        return x.map((id, k) => {
          const d = b.node(id).shape[axis];
          const start = at;
          at += d;
          if (!need[k]) return null;
          return b.emit('slice', [g], { starts: ys.map((_, i) => (i === axis ? start : 0)), ends: ys.map((n, i) => (i === axis ? start + d : n)) });
        });
      },
    },
    eval: ({ node, ins, shapes }) => {
      const axis = normAxis(node.attrs.axis, node.shape.length);
      const outer = numel(node.shape.slice(0, axis));
      const inner = numel(node.shape.slice(axis + 1));
      const rowOut = node.shape[axis] * inner;
      const out = new Float64Array(numel(node.shape));
      let at = 0;
      ins.forEach((x, k) => {
        const rowIn = shapes[k][axis] * inner;
        for (let o = 0; o < outer; o++) out.set(x.subarray(o * rowIn, (o + 1) * rowIn), o * rowOut + at);
        at += rowIn;
      });
      return out;
    },
    flops: NO_FLOPS,
  },
  pad: {
    kind: 'layout',
    arity: 1,
    type: (ins, a) => {
      need(a.pads.length === 2 * ins[0].shape.length, `pad needs ${2 * ins[0].shape.length} values (before, after per dimension)`);
      return { shape: ins[0].shape.map((d, i) => d + a.pads[2 * i] + a.pads[2 * i + 1]), dtype: ins[0].dtype };
    },
    grad: {
      vjp: ({ b, g, x, node }) => {
        const xs = b.node(x[0]).shape;
        const pads = node.attrs.pads;
        if (pads.every((p) => p >= 0)) return [b.emit('slice', [g], { starts: xs.map((_, k) => pads[2 * k]), ends: xs.map((d, k) => pads[2 * k] + d) })];
        return [b.emit('pad', [g], { pads: pads.map((p) => -p), value: 0 })];
      },
    },
    // out[i] = x[i - before] where that is in range, else `value`; negative pads crop.
    eval: ({ node, ins, shapes }) => {
      const pads = node.attrs.pads;
      const x = ins[0];
      const out = new Float64Array(numel(node.shape)).fill(node.attrs.value ?? 0);
      const os = stridesOf(node.shape);
      walk(shapes[0], (flat, idx) => {
        let o = 0;
        for (let k = 0; k < idx.length; k++) {
          const j = idx[k] + pads[2 * k];
          if (j < 0 || j >= node.shape[k]) return;
          o += j * os[k];
        }
        out[o] = x[flat];
      });
      return out;
    },
    flops: NO_FLOPS,
  },
} satisfies OpTablePart;
