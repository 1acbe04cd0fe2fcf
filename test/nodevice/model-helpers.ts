// Helpers shared by the model tests (models, losses, ablations, params):
// compiling a .lovt model or source string, the expected PyTorch state_dict
// names of torchvision ResNets and Hugging Face BERT (generated here from the
// PyTorch module structure, independently of the .lovt files), and a structural
// hash of graph nodes for comparing two compiled graphs.

import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { gradients } from '../../compiler/autodiff.ts';
import { GraphBuilder } from '../../compiler/builder.ts';
import { compileModel, renderDiagnostic } from '../../compiler/frontend/index.ts';
import type { Graph, Node } from '../../compiler/ir.ts';
import type { CheckpointInfo } from '../../runtime/train/checkpoint.ts';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const MODELS = path.join(ROOT, 'models');

export interface Compiled {
  graph: Graph;
  // ModelInfo of the front end (loss terms, configs, train spec, ...)
  model: any;
}

/** Compiles a model file (relative to models/) or a source string; throws with rendered diagnostics. */
export function compile(
  source: { file: string } | { text: string; name?: string },
  opts: { model?: string; mode?: 'train' | 'eval'; set?: Record<string, string | number> } = {},
): Compiled {
  const src = 'file' in source ? { path: path.join(MODELS, source.file) } : { text: source.text, path: path.join(MODELS, source.name ?? 'test-model.lovt') };
  const set = Object.fromEntries(Object.entries(opts.set ?? {}).map(([k, v]) => [k, String(v)]));
  const r: any = compileModel(src as any, { model: opts.model, mode: opts.mode ?? 'train', set });
  if (!r.ok)
    throw new Error(`compiling ${'file' in source ? source.file : 'a test model'} failed:\n${r.diagnostics.map((d: any) => renderDiagnostic(d)).join('\n')}`);
  return { graph: r.graph, model: r.model };
}

// ---------------------------------------------------------------- PyTorch names

export type StateEntry = [name: string, shape: number[]];

function convBN(prefix: string, conv: string, bn: string, out: number, inp: number, k: number): StateEntry[] {
  return [[`${prefix}${conv}.weight`, [out, inp, k, k]], ...bnEntries(`${prefix}${bn}`, out)];
}

function bnEntries(prefix: string, c: number): StateEntry[] {
  return [
    [`${prefix}.weight`, [c]],
    [`${prefix}.bias`, [c]],
    [`${prefix}.running_mean`, [c]],
    [`${prefix}.running_var`, [c]],
    [`${prefix}.num_batches_tracked`, []],
  ];
}

/** torchvision.models.resnet{18,34,50}(...).state_dict() without fc, in PyTorch's order. */
export function torchvisionResNetState(arch: 'resnet18' | 'resnet34' | 'resnet50', width = 64): StateEntry[] {
  const blocks = arch === 'resnet18' ? [2, 2, 2, 2] : [3, 4, 6, 3];
  const expansion = arch === 'resnet50' ? 4 : 1;
  const out: StateEntry[] = [...convBN('', 'conv1', 'bn1', width, 3, 7)];
  let inplanes = width;
  blocks.forEach((n, li) => {
    const planes = width * 2 ** li;
    for (let i = 0; i < n; i++) {
      const p = `layer${li + 1}.${i}.`;
      const stride = i === 0 && li > 0 ? 2 : 1;
      if (expansion === 4) {
        out.push(
          ...convBN(p, 'conv1', 'bn1', planes, inplanes, 1),
          ...convBN(p, 'conv2', 'bn2', planes, planes, 3),
          ...convBN(p, 'conv3', 'bn3', planes * 4, planes, 1),
        );
      } else {
        out.push(...convBN(p, 'conv1', 'bn1', planes, inplanes, 3), ...convBN(p, 'conv2', 'bn2', planes, planes, 3));
      }
      if (stride !== 1 || inplanes !== planes * expansion) out.push(...convBN(p, 'downsample.0', 'downsample.1', planes * expansion, inplanes, 1));
      inplanes = planes * expansion;
    }
  });
  return out;
}

/** transformers.BertModel(config, add_pooling_layer=False).state_dict() (persistent entries), in PyTorch's order. */
export function huggingFaceBertState(vocab: number, hidden = 768, layers = 12, intermediate = 3072, maxPosition = 512, typeVocab = 2): StateEntry[] {
  const ln = (p: string): StateEntry[] => [
    [`${p}.weight`, [hidden]],
    [`${p}.bias`, [hidden]],
  ];
  const lin = (p: string, o: number, i: number): StateEntry[] => [
    [`${p}.weight`, [o, i]],
    [`${p}.bias`, [o]],
  ];
  const out: StateEntry[] = [
    ['embeddings.word_embeddings.weight', [vocab, hidden]],
    ['embeddings.position_embeddings.weight', [maxPosition, hidden]],
    ['embeddings.token_type_embeddings.weight', [typeVocab, hidden]],
    ...ln('embeddings.LayerNorm'),
  ];
  for (let l = 0; l < layers; l++) {
    const p = `encoder.layer.${l}.`;
    out.push(
      ...lin(`${p}attention.self.query`, hidden, hidden),
      ...lin(`${p}attention.self.key`, hidden, hidden),
      ...lin(`${p}attention.self.value`, hidden, hidden),
      ...lin(`${p}attention.output.dense`, hidden, hidden),
      ...ln(`${p}attention.output.LayerNorm`),
      ...lin(`${p}intermediate.dense`, intermediate, hidden),
      ...lin(`${p}output.dense`, hidden, intermediate),
      ...ln(`${p}output.LayerNorm`),
    );
  }
  return out;
}

/**
 * torch.nn.Sequential(Linear(d_in, d_hidden), BatchNorm1d(d_hidden), ReLU(), Linear(d_hidden, d_out)).state_dict(),
 * or without the BatchNorm1d (ConVIRT's Linear–ReLU–Linear): Sequential keys are the module
 * indices, and the ReLU (index 2, or 1 without BatchNorm) has no state.
 */
export function sequentialHeadState(dIn: number, dHidden: number, dOut: number, batchNorm: boolean): StateEntry[] {
  const modules: ['linear' | 'bn' | 'relu', number, number][] = batchNorm
    ? [
        ['linear', dHidden, dIn],
        ['bn', dHidden, 0],
        ['relu', 0, 0],
        ['linear', dOut, dHidden],
      ]
    : [
        ['linear', dHidden, dIn],
        ['relu', 0, 0],
        ['linear', dOut, dHidden],
      ];
  return modules.flatMap(([kind, out, inp], i): StateEntry[] =>
    kind === 'linear'
      ? [
          [`${i}.weight`, [out, inp]],
          [`${i}.bias`, [out]],
        ]
      : kind === 'bn'
        ? bnEntries(String(i), out)
        : [],
  );
}

export const BN_BUFFER = /\.(running_mean|running_var|num_batches_tracked)$/;

/** The graph's state under `prefix.` (prefix stripped), in the graph's order. */
export function stateUnder(graph: Graph, prefix: string): StateEntry[] {
  return Object.values(graph.state)
    .filter((s) => s.name.startsWith(prefix + '.'))
    .map((s) => [s.name.slice(prefix.length + 1), s.shape] as StateEntry);
}

/** Number of PyTorch parameters (BatchNorm running statistics excluded) among entries. */
export function parameterCount(entries: StateEntry[]): number {
  return entries.filter(([n]) => !BN_BUFFER.test(n)).reduce((a, [, s]) => a + s.reduce((x, y) => x * y, 1), 0);
}

// ---------------------------------------------------------------- conv_transpose2d

/** The arguments of one conv_transpose2d call: x [N, C, H, W], weight [C, O/groups, k], output channels O. */
export interface ConvTransposeCase {
  N: number;
  C: number;
  H: number;
  W: number;
  O: number;
  k: [number, number];
  stride: [number, number];
  padding: [number, number];
  outputPadding: [number, number];
  dilation: [number, number];
  groups: number;
}

/**
 * The language's conv_transpose2d(x, w, ...) compiled from .lovt, with the
 * gradients of L = <y, r> (r an input) in x and w appended: outputs y, loss,
 * grad.x and grad.w. The same graph runs on the reference and on the device.
 */
export function convTransposeProbe(c: ConvTransposeCase): Graph {
  const args = `stride: [${c.stride}], padding: [${c.padding}], output_padding: [${c.outputPadding}], dilation: [${c.dilation}], groups: ${c.groups}`;
  const text = `model T {
  input x: f32[${c.N}, ${c.C}, ${c.H}, ${c.W}]
  input w: f32[${c.C}, ${c.O / c.groups}, ${c.k}]
  output y = conv_transpose2d(x, w, ${args})
}`;
  const { graph } = compile({ text, name: 'conv-transpose-probe.lovt' }, { mode: 'eval' });
  const b = new GraphBuilder(structuredClone(graph));
  const y = graph.outputs.y;
  b.output('loss', b.sum(b.mul(y, b.input('r', graph.nodes[y].shape)), [0, 1, 2, 3]));
  return withGradients(b.graph, 'loss', { x: graph.inputs.x, w: graph.inputs.w });
}

/** A copy of `graph` with outputs grad.NAME = d output[loss] / d node, for each named node (inputs or state). */
export function withGradients(graph: Graph, loss: string, wrt: Record<string, number>): Graph {
  const b = new GraphBuilder(structuredClone(graph));
  const grads = gradients(b, graph.outputs[loss], Object.values(wrt));
  for (const [name, id] of Object.entries(wrt)) b.output(`grad.${name}`, grads.get(id)!);
  return b.graph;
}

/**
 * conv_transpose2d in its scatter form, float64, written from PyTorch's
 * definition: every x[n, ci, ih, iw] adds x * w[ci, oc, i, j] to output pixel
 * (ih·s − p + i·d, iw·s − p + j·d) of each output channel oc of its group.
 */
export function convTransposeScatter(c: ConvTransposeCase, x: ArrayLike<number>, w: ArrayLike<number>): { shape: number[]; y: Float64Array } {
  const [OH, OW] = [0, 1].map((i) => ([c.H, c.W][i] - 1) * c.stride[i] - 2 * c.padding[i] + c.dilation[i] * (c.k[i] - 1) + c.outputPadding[i] + 1);
  const y = new Float64Array(c.N * c.O * OH * OW);
  const Cg = c.C / c.groups;
  const Og = c.O / c.groups;
  for (let n = 0; n < c.N; n++)
    for (let ci = 0; ci < c.C; ci++)
      for (let ih = 0; ih < c.H; ih++)
        for (let iw = 0; iw < c.W; iw++) {
          const v = x[((n * c.C + ci) * c.H + ih) * c.W + iw];
          for (let oc = 0; oc < Og; oc++)
            for (let i = 0; i < c.k[0]; i++)
              for (let j = 0; j < c.k[1]; j++) {
                const oh = ih * c.stride[0] - c.padding[0] + i * c.dilation[0];
                const ow = iw * c.stride[1] - c.padding[1] + j * c.dilation[1];
                if (oh < 0 || oh >= OH || ow < 0 || ow >= OW) continue;
                const o = Math.floor(ci / Cg) * Og + oc;
                y[((n * c.O + o) * OH + oh) * OW + ow] += v * w[((ci * Og + oc) * c.k[0] + i) * c.k[1] + j];
              }
        }
  return { shape: [c.N, c.O, OH, OW], y };
}

/** The conv_transpose2d cases both the reference and the device tests run: strides, paddings, output paddings (one only dilation allows), groups, dilation. */
export const CONV_TRANSPOSE_CASES: ConvTransposeCase[] = [
  // The U-Net up-sampling: 2x2, stride 2.
  { N: 2, C: 5, H: 3, W: 4, O: 3, k: [2, 2], stride: [2, 2], padding: [0, 0], outputPadding: [0, 0], dilation: [1, 1], groups: 1 },
  // 3x3 stride 2 padding 1 with output_padding 1 (exact 2x), odd sizes.
  { N: 1, C: 3, H: 5, W: 3, O: 4, k: [3, 3], stride: [2, 2], padding: [1, 1], outputPadding: [1, 1], dilation: [1, 1], groups: 1 },
  // Unequal strides and paddings, a non-square kernel, groups.
  { N: 2, C: 4, H: 3, W: 5, O: 6, k: [3, 2], stride: [3, 1], padding: [2, 0], outputPadding: [2, 0], dilation: [1, 1], groups: 2 },
  // A kernel narrower than the stride (gaps), padding larger than the kernel reach.
  { N: 1, C: 2, H: 4, W: 4, O: 3, k: [1, 1], stride: [2, 3], padding: [0, 1], outputPadding: [1, 2], dilation: [1, 1], groups: 1 },
  // Dilation, and output_padding >= stride (allowed as it is < dilation), with and without padding.
  { N: 1, C: 3, H: 4, W: 3, O: 2, k: [3, 2], stride: [1, 2], padding: [1, 0], outputPadding: [1, 2], dilation: [2, 3], groups: 1 },
  { N: 2, C: 6, H: 3, W: 3, O: 3, k: [2, 3], stride: [1, 1], padding: [0, 2], outputPadding: [2, 1], dilation: [3, 2], groups: 3 },
];

// ---------------------------------------------------------------- graph comparison

/**
 * A structural hash of every node: op, attributes, type and the hashes of its
 * inputs; leaves by their feed/state name. Two graphs compute the same value at
 * nodes with equal hashes.
 */
export function structuralHashes(graph: Graph): string[] {
  const hashes: string[] = [];
  for (const n of graph.nodes) hashes.push(nodeHash(n, hashes));
  return hashes;
}

function nodeHash(n: Node, hashes: string[]): string {
  const attrs = JSON.stringify(Object.entries(n.attrs).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
  const s = `${n.op}|${n.dtype}[${n.shape}]|${attrs}|(${n.inputs.map((i) => hashes[i]).join(',')})`;
  // two 32-bit FNV-style lanes keep hashes short on deep graphs (collisions are negligible)
  let h1 = 0x811c9dc5,
    h2 = 0x01000193;
  for (let i = 0; i < s.length; i++) {
    h1 = Math.imul(h1 ^ s.charCodeAt(i), 0x01000193) >>> 0;
    h2 = Math.imul(h2 ^ s.charCodeAt(i), 0x85ebca6b) >>> 0;
  }
  return `${n.op}:${h1.toString(16)}:${h2.toString(16)}`;
}

/** Deterministic pseudo-random numbers for hand-built inputs (mulberry32). */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function randomArray(n: number, r: () => number, scale = 1): Float64Array {
  const a = new Float64Array(n);
  for (let i = 0; i < n; i++) a[i] = (r() * 2 - 1) * scale;
  return a;
}

/**
 * State values for numerical tests, independent of runtime/init.ts: weights
 * uniform with a 1/√fan_in scale, norm weights near 1, small biases, BatchNorm
 * running statistics non-trivial (so eval mode is exercised), counters 0.
 */
export function randomState(graph: Graph, seed: number): Record<string, Float64Array> {
  const r = rng(seed);
  const out: Record<string, Float64Array> = {};
  for (const s of Object.values(graph.state)) {
    const n = s.shape.reduce((a, b) => a * b, 1);
    const name = s.name;
    let v: Float64Array;
    if (name.endsWith('num_batches_tracked')) v = new Float64Array(n).fill(3);
    else if (name.endsWith('running_var')) v = randomArray(n, r, 0.5).map((x) => x + 1);
    else if (name.endsWith('running_mean')) v = randomArray(n, r, 0.2);
    else if (/(^|\.)(bn\d*|downsample\.1|norm|LayerNorm|_head\.1)\.weight$/.test(name) && s.shape.length === 1) v = randomArray(n, r, 0.2).map((x) => x + 1);
    else if (s.shape.length <= 1) v = randomArray(n, r, 0.1);
    else if (/embeddings\.weight$/.test(name)) v = randomArray(n, r, 0.5);
    else v = randomArray(n, r, Math.sqrt(3 / (n / s.shape[0])));
    out[name] = v;
  }
  return out;
}

// ---------------------------------------------------------------- large models

/**
 * A generated program of about `items` model statements: a base model of
 * configs, params, lets (single and tuple), losses, outputs, freezes and
 * asserts, and a variant `Child` that overrides every config and re-weights or
 * drops every loss. For checking that the front end scales linearly
 * (test/nodevice/frontend.test.ts, bench/frontend.ts). Each group i of 10
 * statements: config c_i = i (i + 1 in Child), param p_i (frozen),
 * loss l_i (dropped in Child for even i, weight 2 for odd i), output o_i.
 */
export function largeModelSource(items: number): string {
  const groups = Math.max(1, Math.floor(items / 10));
  const base = ['model Big {', '  input x: f32[4]'];
  const child = ['model Child extends Big {'];
  for (let i = 0; i < groups; i++) {
    base.push(
      `  config c${i}: int = ${i}`,
      `  param p${i}: f32[2] = zeros()`,
      `  let a${i} = x * c${i}`,
      `  let (b${i}, d${i}) = (a${i}, x)`,
      `  loss l${i}(weight: 0.5) = sum(a${i})`,
      `  output o${i} = b${i}`,
      `  freeze p${i}`,
      `  assert(c${i} >= 0, "c${i} is negative")`,
    );
    child.push(`  config c${i} = ${i + 1}`, i % 2 ? `  loss l${i}(weight: 2.0)` : `  drop loss l${i}`);
  }
  return [...base, '}', ...child, '}', ''].join('\n');
}

/** A minimal checkpoint manifest (constant schedule, no early stopping) for tests of run directories and export. */
export function checkpointInfo(fields: Partial<CheckpointInfo> & { step: number }): CheckpointInfo {
  return {
    model: { name: 'M', path: 'm.lovt', sourceHash: 'h' },
    set: {},
    config: {},
    train: {},
    data: {},
    seed: 1,
    epoch: 0,
    dataPosition: { epoch: 0, cursor: 0 },
    schedule: { kind: 'constant' },
    earlyStop: null,
    metrics: {},
    ...fields,
  };
}
