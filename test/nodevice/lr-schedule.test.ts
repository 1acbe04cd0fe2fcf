// LR schedules and early stopping against PyTorch's own formulas and
// hand-worked sequences.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createSchedule, plateauSpec } from '../../runtime/train/lr-schedule.ts';
import { EarlyStopping } from '../../runtime/train/early-stop.ts';

/**
 * CosineAnnealingLR.get_lr() as PyTorch implements it (the recursive form, one
 * call per scheduler.step()), written independently of the closed form the
 * schedule uses. Returns the LR in force for steps 0..n-1.
 */
function torchCosineRecursive(base: number, tMax: number, etaMin: number, n: number): number[] {
  const lrs = [base];
  let lr = base;
  for (let lastEpoch = 1; lastEpoch < n; lastEpoch++) {
    if ((lastEpoch - 1 - tMax) % (2 * tMax) === 0) {
      lr = lr + ((base - etaMin) * (1 - Math.cos(Math.PI / tMax))) / 2;
    } else {
      lr = ((1 + Math.cos((Math.PI * lastEpoch) / tMax)) / (1 + Math.cos((Math.PI * (lastEpoch - 1)) / tMax))) * (lr - etaMin) + etaMin;
    }
    lrs.push(lr);
  }
  return lrs;
}

test('cosine matches PyTorch CosineAnnealingLR step by step, including past the period', () => {
  for (const [base, tMax, etaMin] of [
    [1e-4, 7, 0],
    [3e-4, 10, 1e-6],
    [0.1, 1, 0],
  ] as const) {
    const s = createSchedule({ kind: 'cosine', period: tMax, etaMin }, base);
    const ref = torchCosineRecursive(base, tMax, etaMin, 5 * tMax + 3);
    ref.forEach((want, step) => {
      const got = s.lrAt(step);
      assert.ok(Math.abs(got - want) <= 1e-12 * base + 1e-18, `T_max ${tMax} step ${step}: ${got} vs torch ${want}`);
    });
  }
});

test('cosine: base LR at step 0, eta_min at the period, back to base at twice the period', () => {
  const s = createSchedule({ kind: 'cosine', period: 4, etaMin: 1e-6 }, 1e-4);
  assert.is(s.lrAt(0), 1e-4);
  assert.ok(Math.abs(s.lrAt(4) - 1e-6) < 1e-18);
  assert.ok(Math.abs(s.lrAt(2) - (1e-6 + (1e-4 - 1e-6) / 2)) < 1e-18);
  assert.ok(Math.abs(s.lrAt(8) - 1e-4) < 1e-18);
});

test('cosine with warm-up: linear ramp to the base LR, then the cosine from its start', () => {
  const s = createSchedule({ kind: 'cosine', period: 10, etaMin: 0, warmupSteps: 4 }, 0.4);
  assert.equal(
    [0, 1, 2, 3].map((t) => s.lrAt(t)),
    [0.1, 0.2, 0.30000000000000004, 0.4],
  );
  const plain = createSchedule({ kind: 'cosine', period: 10, etaMin: 0 }, 0.4);
  for (let t = 4; t < 30; t++) assert.is(s.lrAt(t), plain.lrAt(t - 4));
});

test('constant schedule ignores step and validation', () => {
  const s = createSchedule({ kind: 'constant' }, 0.01);
  s.onValidation(5);
  assert.is(s.lrAt(0), 0.01);
  assert.is(s.lrAt(12345), 0.01);
});

test('ReduceLROnPlateau: reduces after more than `patience` bad validations, with cooldown and min_lr', () => {
  // patience 2: the 3rd bad validation in a row reduces (num_bad_epochs > patience).
  const s = createSchedule(plateauSpec({ patience: 2, factor: 0.5 }), 1);
  const seq = [1.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.5];
  const lrs = seq.map((v) => (s.onValidation(v), s.lrAt(0)));
  assert.equal(lrs, [1, 1, 1, 0.5, 0.5, 0.5, 0.5, 0.25]);

  // threshold is relative: 0.99995 is not better than 1.0 * (1 - 1e-4).
  const t = createSchedule(plateauSpec({ patience: 0, factor: 0.1 }), 1);
  t.onValidation(1);
  t.onValidation(0.99995);
  assert.ok(Math.abs(t.lrAt(0) - 0.1) < 1e-15);

  // cooldown 1 swallows the bad epoch after a reduction; min_lr floors the LR.
  const c = createSchedule(plateauSpec({ patience: 0, factor: 0.5, cooldown: 1, minLr: 0.3 }), 1);
  const clrs = [2, 2, 2, 2, 2, 2].map((v) => (c.onValidation(v), c.lrAt(0)));
  // 2 (best), 2 (bad -> reduce to .5, cooldown 1), 2 (cooldown), 2 (bad -> .3 floor), 2 (cooldown), 2 (0.3: below eps change)
  assert.equal(clrs, [1, 0.5, 0.5, 0.3, 0.3, 0.3]);
});

test('plateau state survives a JSON round trip exactly', () => {
  const a = createSchedule(plateauSpec({ patience: 1, factor: 0.5 }), 1);
  [3, 2, 2].forEach((v) => a.onValidation(v));
  const b = createSchedule(plateauSpec({ patience: 1, factor: 0.5 }), 1);
  b.restore(JSON.parse(JSON.stringify(a.state())));
  for (const v of [2, 2, 1.5, 1.6, 1.7]) {
    a.onValidation(v);
    b.onValidation(v);
    assert.is(b.lrAt(0), a.lrAt(0));
  }
  const fresh = createSchedule(plateauSpec({ patience: 1, factor: 0.5 }), 1);
  fresh.restore(JSON.parse(JSON.stringify(createSchedule(plateauSpec({}), 1).state())));
  fresh.onValidation(1e30); // best restored as +inf, so any finite value improves
  assert.is(fresh.lrAt(0), 1);
});

test('restoring a different schedule kind is an error naming both', () => {
  const s = createSchedule({ kind: 'cosine', period: 3, etaMin: 0 }, 1);
  assert.throws(() => s.restore({ kind: 'plateau', lr: 1 }), /'plateau'.*'cosine'/);
});

test('bad schedule specs are rejected with the offending value', () => {
  assert.throws(() => createSchedule({ kind: 'cosine', period: 0, etaMin: 0 }, 1), /period.*0/);
  assert.throws(() => createSchedule(plateauSpec({ factor: 1.5 }), 1), /factor.*1\.5/);
  assert.throws(() => createSchedule({ kind: 'constant' }, NaN), /learning rate/);
});

test('early stopping: Lightning semantics (stop after `patience` epochs without improvement)', () => {
  const es = new EarlyStopping({ monitor: 'val_total', patience: 2, minDelta: 0 });
  const d = [5, 4, 4, 3.9, 3.95, 3.9].map((v, e) => es.update(v, e));
  assert.equal(
    d.map((x) => x.improved),
    [true, true, false, true, false, false],
  );
  assert.equal(
    d.map((x) => x.stop),
    [false, false, false, false, false, true],
  );
  assert.match(d[5].reason!, /did not improve for 2 epochs.*best 3\.9.*epoch 4/);
  assert.is(es.bestValue, 3.9);
});

test('early stopping: min_delta, non-finite values and state round trip', () => {
  const es = new EarlyStopping({ monitor: 'val_total', patience: 3, minDelta: 0.1 });
  assert.ok(es.update(1, 0).improved);
  assert.not.ok(es.update(0.95, 1).improved); // not better by more than min_delta
  const copy = new EarlyStopping({ monitor: 'val_total', patience: 3, minDelta: 0.1 });
  copy.restore(JSON.parse(JSON.stringify(es.state())));
  assert.equal(copy.state(), es.state());
  const nan = copy.update(NaN, 2);
  assert.ok(nan.stop);
  assert.match(nan.reason!, /val_total is NaN at epoch 3/);
  assert.throws(() => new EarlyStopping({ monitor: 'x', patience: 0, minDelta: 0 }), /patience/);
});

test.run();
