// Batches checked against a model's inputs before they reach the device
// (runtime/train/inputs.ts): names and shapes, NaN/inf in float inputs, and
// token ids outside the embedding table they index, found from the graph.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { GraphBuilder } from '../../compiler/builder.ts';
import { compileModelOrThrow } from '../../compiler/frontend/index.ts';
import type { HostTensor } from '../../runtime/safetensors.ts';
import { checkBatch, checkBatchValues, inputIndexBounds } from '../../runtime/train/inputs.ts';

test('index bounds come from the gathers an i32 input feeds (through reshapes), the smallest table winning', () => {
  const b = new GraphBuilder();
  const ids = b.input('ids', [2, 3], 'i32');
  const other = b.input('mask', [2, 3], 'i32');
  const big = b.state('big.weight', [50, 4], { kind: 'zeros' }, true);
  const small = b.state('small.weight', [7, 4], { kind: 'zeros' }, true);
  b.output('a', b.emit('gather', [big, ids]));
  b.output('b', b.emit('gather', [small, b.reshape(ids, [6])]));
  b.output('c', b.emit('cast', [other], { to: 'f32' }));
  assert.equal([...inputIndexBounds(b.graph)], [['ids', { rows: 7, table: 'small.weight' }]]);
  checkBatchValues(b.graph, { ids: Int32Array.of(0, 6, 1, 2, 3, 4), mask: Int32Array.of(-9, 99, 0, 0, 0, 0) }, 'ok');
  assert.throws(
    () => checkBatchValues(b.graph, { ids: Int32Array.of(0, 1, 7, 2, 8, 3) }, 'B'),
    /^B: ids\[0, 2\] = 7 is out of range: ids indexes the rows of small\.weight, so with vocabulary size 7 it must be in 0\.\.6 \(and 1 more of ids\)$/,
  );
});

test('ConVIRT-tiny: an all-NaN image and token ids 1,000,000 or -5 (vocabulary 1024) are refused, naming them', () => {
  const { graph } = compileModelOrThrow({ path: 'models/convirt-tiny.lovt' }, { mode: 'train' });
  const [B, T, S] = [8, 64, 128];
  const batch = (image: Float32Array, ids: Int32Array) =>
    new Map<string, HostTensor>([
      ['image', { dtype: 'f32', shape: [B, 3, S, S], data: image }],
      ['input_ids', { dtype: 'i32', shape: [B, T], data: ids }],
      ['attention_mask', { dtype: 'i32', shape: [B, T], data: new Int32Array(B * T).fill(1) }],
      ['token_sentence', { dtype: 'i32', shape: [B, T], data: new Int32Array(B * T).fill(-1) }],
    ]);
  const image = new Float32Array(B * 3 * S * S).fill(0.5);
  const ids = new Int32Array(B * T).fill(3);
  const inputs = checkBatch(graph, batch(image, ids), 'X.safetensors', ['seed']);
  assert.equal(Object.keys(inputs).sort(), ['attention_mask', 'image', 'input_ids', 'token_sentence']);
  assert.throws(
    () => checkBatch(graph, batch(new Float32Array(image.length).fill(NaN), ids), 'X.safetensors', ['seed']),
    /^X\.safetensors: input 'image' has 393,216 NaN or infinite values \(the first: image\[0, 0, 0, 0\] = NaN\)$/,
  );
  for (const bad of [1_000_000, -5]) {
    const wrong = Int32Array.from(ids);
    wrong[T * 3 + 10] = bad;
    assert.throws(
      () => checkBatch(graph, batch(image, wrong), 'X.safetensors', ['seed']),
      new RegExp(
        `^X\\.safetensors: input_ids\\[3, 10\\] = ${bad} is out of range: input_ids indexes the rows of report_encoder\\.embeddings\\.word_embeddings\\.weight, so with vocabulary size 1024 it must be in 0\\.\\.1023$`,
      ),
    );
  }
  assert.throws(
    () => checkBatch(graph, new Map([...batch(image, ids)].filter(([k]) => k !== 'image')), 'X.safetensors', ['seed']),
    /^X\.safetensors does not match the model's inputs: missing 1 \(model inputs not in the file\): image$/,
  );
});

test.run();
