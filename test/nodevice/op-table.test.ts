// The op table (compiler/ops/) against the renderer table (compiler/codegen/
// index.ts): the two halves of a primitive's definition must agree on how it
// is computed, since fusion schedules an op by its table entry and codegen
// renders it by its renderer.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { OpName } from '../../compiler/ir.ts';
import { OPS, primitiveOps } from '../../compiler/ops/index.ts';
import { RENDERERS } from '../../compiler/codegen/index.ts';

/** What renderer an op of each kind needs. */
function expectedRenderer(op: OpName): 'leaf' | 'expr' | 'kernel' {
  const d = OPS[op];
  if (d.kind === 'leaf' || (d.kind === 'constant' && !d.inline)) return 'leaf';
  if (d.kind === 'constant' || d.kind === 'elementwise' || d.kind === 'layout') return 'expr';
  return 'kernel';
}

test('every op has the renderer its kind needs: leaves a buffer, expression ops an expression, anchors a kernel', () => {
  for (const op of primitiveOps()) {
    const r = RENDERERS[op];
    const got = r === 'leaf' ? 'leaf' : 'expr' in r ? 'expr' : 'kernel';
    assert.is(got, expectedRenderer(op), `${op} (${OPS[op].kind})`);
  }
  assert.equal(Object.keys(RENDERERS).sort(), primitiveOps().sort());
});

test('flags fit the kinds: epilogues on anchors, views on expression ops, inline only for constants', () => {
  for (const op of primitiveOps()) {
    const d = OPS[op];
    if (d.epilogue) assert.ok(['reduce', 'contraction', 'nn'].includes(d.kind), `${op}: epilogue on a ${d.kind} op`);
    if (d.view) assert.ok(['elementwise', 'layout'].includes(d.kind) && d.arity === 1, `${op}: view on a ${d.kind} op`);
    if (d.inline) assert.is(d.kind, 'constant', `${op}: inline`);
    if (d.commutative) assert.is(d.arity, 2, `${op}: commutative`);
    if (d.kind === 'leaf' || d.kind === 'constant') assert.is(d.arity, 0, `${op}: a leaf takes no inputs`);
  }
});

test.run();
