// Pretrained weights in and out of a model's state.
//
// --init image_encoder=resnet50.safetensors loads a torchvision ResNet state dict
// (or a Hugging Face BERT one for report_encoder=...) into the state tensors under
// that prefix. The std library keeps torchvision's and Hugging Face's state names
// (models/std/resnet.lovt, bert.lovt), so the mapping is the prefix plus a few
// well-known spellings of the same tensors; anything else that does not line up is
// an error listing every missing, unexpected and mis-shaped tensor, like PyTorch's
// load_state_dict(strict=True).
//
// Export is the reverse for the image encoder: the `image_encoder.*` tensors of a
// checkpoint under torchvision's names, num_batches_tracked as int64, loadable with
// torchvision.models.resnet50().load_state_dict(sd, strict=False) (strict=True after
// `model.fc = torch.nn.Identity()`: the encoder has no classifier).

import type { StateInfo } from '../../compiler/ir.ts';
import { writeSafetensors, type HostTensor, type TensorToWrite } from '../safetensors.ts';
import { refuseNonFinite } from './finite.ts';

/**
 * Tensors of common pretrained checkpoints that a pre-training model does not
 * have: classifier/MLM heads, the BERT pooler, and HF's position_ids buffer.
 * They are skipped when (and only when) the model has no state of that name.
 */
const IGNORABLE_SOURCE_TENSORS: RegExp[] = [/^fc\./, /^cls\./, /^pooler\./, /^embeddings\.position_ids$/];

export interface InitResult {
  /** State name -> tensor, ready to upload. */
  tensors: Map<string, HostTensor>;
  /** Source tensor names skipped as known heads the model does not have. */
  ignored: string[];
}

export class WeightsMismatchError extends Error {
  constructor(
    readonly source: string,
    readonly prefix: string,
    readonly missing: string[],
    readonly unexpected: string[],
    readonly misshaped: string[],
  ) {
    super(`--init ${prefix}=${source} does not match the model's ${prefix}.* state: ${describeDiff({ missing, unexpected, misshaped })}`);
    this.name = 'WeightsMismatchError';
  }
}

/**
 * Normalises one source tensor name to the std library's spelling: the `bert.`
 * prefix of BertFor* checkpoints goes, and TF-era LayerNorm gamma/beta become
 * weight/bias.
 */
export function canonicalSourceName(name: string): string {
  let n = name.startsWith('bert.') ? name.slice('bert.'.length) : name;
  n = n.replace(/\.gamma$/, '.weight').replace(/\.beta$/, '.bias');
  return n;
}

/** A tensor a consumer expects: its name, shape and dtype. */
export interface ExpectedTensor {
  name: string;
  shape: number[];
  dtype: 'f32' | 'i32';
}

export interface TensorDiff {
  missing: string[];
  unexpected: string[];
  /** "name [given] vs model [expected]" */
  misshaped: string[];
}

/**
 * Compares given tensors with the expected ones by name and shape (integer/float
 * dtypes convert, as PyTorch's load_state_dict copies do). `rename` maps a given
 * name to the expected spelling; given names that `ignorable` accepts are not
 * reported as unexpected.
 */
export function diffTensors(
  expected: ExpectedTensor[],
  given: Map<string, HostTensor>,
  opts: { rename?: (name: string) => string; ignorable?: (name: string) => boolean } = {},
): TensorDiff & { matched: Map<string, { given: string; tensor: HostTensor }>; ignored: string[] } {
  const byName = new Map(expected.map((e) => [e.name, e]));
  const matched = new Map<string, { given: string; tensor: HostTensor }>();
  const unexpected: string[] = [];
  const misshaped: string[] = [];
  const ignored: string[] = [];
  const present = new Set<string>();
  for (const [givenName, tensor] of given) {
    const name = opts.rename ? opts.rename(givenName) : givenName;
    const want = byName.get(name);
    if (!want) {
      if (opts.ignorable?.(name)) ignored.push(givenName);
      else unexpected.push(givenName);
      continue;
    }
    present.add(name);
    if (tensor.shape.length !== want.shape.length || tensor.shape.some((d, i) => d !== want.shape[i])) {
      misshaped.push(`${givenName} [${tensor.shape.join(', ')}] vs model [${want.shape.join(', ')}]`);
      continue;
    }
    matched.set(name, { given: givenName, tensor: convertDtype(tensor, want.dtype) });
  }
  const missing = expected.filter((e) => !present.has(e.name)).map((e) => e.name);
  return { missing, unexpected, misshaped, matched, ignored };
}

/** "missing 2 (...): a, b; unexpected 1 (...): c; mis-shaped ..." for error messages. */
export function describeDiff(d: TensorDiff, where = { missing: 'in the model, not in the file', unexpected: 'in the file, not in the model' }): string {
  const list = (names: string[]) => names.slice(0, 12).join(', ') + (names.length > 12 ? `, … (${names.length - 12} more)` : '');
  const parts: string[] = [];
  if (d.missing.length) parts.push(`missing ${d.missing.length} (${where.missing}): ${list(d.missing)}`);
  if (d.unexpected.length) parts.push(`unexpected ${d.unexpected.length} (${where.unexpected}): ${list(d.unexpected)}`);
  if (d.misshaped.length) parts.push(`mis-shaped ${d.misshaped.length}: ${list(d.misshaped)}`);
  return parts.join('; ');
}

export function hasDifferences(d: TensorDiff): boolean {
  return d.missing.length + d.unexpected.length + d.misshaped.length > 0;
}

/**
 * Matches the tensors of a pretrained file to the model state under `prefix`.
 * Throws WeightsMismatchError listing every problem at once.
 */
export function matchInitWeights(state: Record<string, StateInfo>, prefix: string, file: Map<string, HostTensor>, sourceDescription: string): InitResult {
  const dotted = prefix.endsWith('.') ? prefix : `${prefix}.`;
  const expected: ExpectedTensor[] = Object.values(state)
    .filter((info) => info.name.startsWith(dotted))
    .map((info) => ({ name: info.name, shape: info.shape, dtype: info.dtype }));
  if (expected.length === 0) {
    const modules = [...new Set(Object.keys(state).map((n) => n.split('.')[0]))].filter((n) => !/^(optim|grad_acc)$/.test(n));
    throw new Error(`--init ${prefix}=${sourceDescription}: the model has no state under '${dotted}' (modules: ${modules.join(', ')})`);
  }
  const d = diffTensors(expected, file, {
    rename: (n) => dotted + canonicalSourceName(n),
    ignorable: (n) => IGNORABLE_SOURCE_TENSORS.some((re) => re.test(n.slice(dotted.length))),
  });
  if (hasDifferences(d)) throw new WeightsMismatchError(sourceDescription, prefix.replace(/\.$/, ''), d.missing, d.unexpected, d.misshaped);
  refuseNonFinite(
    [...d.matched.values()].map((m) => [m.given, m.tensor]),
    `--init ${prefix.replace(/\.$/, '')}=${sourceDescription}`,
  );
  return { tensors: new Map([...d.matched].map(([name, m]) => [name, m.tensor])), ignored: d.ignored };
}

/** Stored integer counters (num_batches_tracked, int64 in PyTorch) load into f32 state and vice versa. */
function convertDtype(t: HostTensor, dtype: 'f32' | 'i32'): HostTensor {
  if (t.dtype === dtype) return t;
  if (dtype === 'f32') return { dtype: 'f32', shape: t.shape, data: Float32Array.from(t.data) };
  return { dtype: 'i32', shape: t.shape, data: Int32Array.from(t.data, Math.round) };
}

/** Parses one `--init PREFIX=FILE` argument. */
export function parseInitArg(arg: string): { prefix: string; file: string } {
  const eq = arg.indexOf('=');
  if (eq <= 0 || eq === arg.length - 1) {
    throw new Error(`--init expects PREFIX=FILE.safetensors (e.g. image_encoder=resnet50.safetensors), got '${arg}'`);
  }
  return { prefix: arg.slice(0, eq), file: arg.slice(eq + 1) };
}

/**
 * The state tensors under `prefix` renamed without it, as safetensors bytes:
 * float tensors as F32, integer counters as I64 (PyTorch's long).
 */
export function exportPrefixed(tensors: Map<string, HostTensor>, prefix: string, metadata: Record<string, string> = {}): Uint8Array {
  const dotted = prefix.endsWith('.') ? prefix : `${prefix}.`;
  const out = new Map<string, TensorToWrite>();
  for (const [name, t] of tensors) {
    if (!name.startsWith(dotted)) continue;
    out.set(name.slice(dotted.length), { shape: t.shape, data: t.data, dtype: t.dtype === 'i32' ? 'I64' : 'F32' });
  }
  if (out.size === 0) {
    const modules = [...new Set([...tensors.keys()].map((n) => n.split('.')[0]))];
    throw new Error(`nothing to export: no state under '${dotted}' (the checkpoint has: ${modules.join(', ')})`);
  }
  refuseNonFinite(
    [...tensors].filter(([name]) => name.startsWith(dotted)),
    `refusing to export: the checkpoint's ${dotted}* state`,
  );
  // 'pt' marks a PyTorch state dict for Hugging Face tooling.
  return writeSafetensors(out, { format: 'pt', ...metadata });
}
