// Phrase grounding of a run (runtime/eval/grounding-run.ts) without a device: which
// sentences are grounded in which images (checked against the report text itself), the
// mask → region mapping and the attention layout on a worked example, the region order of
// flatten_regions and the axes of the alignment model's attention, and the CLI's errors
// for runs it cannot ground. The end-to-end run is test/gpu/cli-grounding.test.ts.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { evaluate } from '../../compiler/reference.ts';
import { MemoryFileSource, readText } from '../../runtime/data/fs.ts';
import { MimicCxrDataset } from '../../runtime/data/mimic.ts';
import { generateSynthCXR, SYNTH_ANNOTATIONS_JSON } from '../../runtime/data/synth/dataset.ts';
import { ReportTokenizer } from '../../runtime/data/tokenizer.ts';
import { cellsInMask, cellsOverlappingMask } from '../../runtime/eval/grounding.ts';
import {
  attentionColumn,
  groundingImages,
  groundingMarkdown,
  groundingNotes,
  groundingText,
  groundSentence,
  regionGrid,
  summarizeGrounding,
  type GroundingResult,
  type GroundingTarget,
} from '../../runtime/eval/grounding-run.ts';
import { maskToEval } from '../../runtime/eval/synth-tasks.ts';
import { NodeStorage } from '../../runtime/platform/node-storage.ts';
import { saveCheckpoint } from '../../runtime/train/checkpoint.ts';
import { assertOneLineError, lovtRun } from '../lovt-run.ts';
import { checkpointInfo, compile } from './model-helpers.ts';

/** What a sentence names, read from its words alone: finding type and side (null: no side word). */
function namedFindings(sentence: string): { type: string; side: string | null }[] {
  const s = sentence.toLowerCase();
  if (/^(no|there is no|lungs are clear|the lungs are clear)\b/.test(s)) return [];
  const side = /\bright\b/.test(s) ? 'right' : /\bleft\b/.test(s) ? 'left' : null;
  if (/catheter|\bij\b|central line|endotracheal/.test(s)) return [{ type: 'line', side: null }];
  if (/device|metallic density|pacemaker/.test(s)) return [{ type: 'device', side }];
  if (/nodul/.test(s)) return [{ type: 'nodule', side }];
  if (/pneumothorax/.test(s)) return [{ type: 'pneumothorax', side }];
  if (/effusion|costophrenic/.test(s)) return [{ type: 'effusion', side }];
  if (/cardiomegaly|enlarge/.test(s)) return [{ type: 'cardiomegaly', side: null }];
  if (/consolidation|opacity/.test(s)) return [{ type: 'consolidation', side }];
  return [];
}

test('every sentence naming a finding drawn in a test image is grounded there, and only those (the report text decides)', async () => {
  const files = new MemoryFileSource();
  await generateSynthCXR(files, { studies: 150, seed: 4, imageSize: 32 });
  const ann = JSON.parse(await readText(files, SYNTH_ANNOTATIONS_JSON));
  const dataset = await MimicCxrDataset.open(files, { tokenizer: await ReportTokenizer.load(files, 'vocab.txt') });
  const images = groundingImages(ann, dataset.studies);
  const got = new Set<string>();
  for (const img of images) {
    for (const t of img.targets) {
      assert.is(t.text, img.study.sentences[t.sentence], `${img.id}: the slot holds the linked sentence`);
      got.add(`${img.id}|${t.sentence}|${t.type}`);
    }
  }
  // Independently: every visible finding × every report sentence whose words name its type and side.
  const want = new Set<string>();
  for (const study of ann.studies) {
    for (const image of study.images) {
      for (const drawn of image.findings) {
        if (drawn.area === 0) continue;
        const f = study.findings[drawn.finding];
        study.sentences.forEach((sentence: string, i: number) => {
          if (namedFindings(sentence).some((n) => n.type === f.type && (n.side === null || f.side === undefined || n.side === f.side))) {
            want.add(`p${study.subject_id}/s${study.study_id}/${image.dicom_id}|${i}|${f.type}`);
          }
        });
      }
    }
  }
  assert.ok(want.size > 100, `${want.size} pairs`);
  assert.equal([...got].sort(), [...want].sort());
  assert.not.ok(
    images.some((i) => i.targets.some((t) => /^Recommend CT/.test(t.text))),
    'a follow-up sentence names no finding',
  );
  // Only frontal images of the reader's studies; a finding hidden in an image (empty mask) is not grounded there.
  for (const img of images) assert.ok(img.study.imagePaths.includes(img.imagePath));
});

test('annotations without the sentence links, or with other sentences, are refused with "regenerate"', async () => {
  const files = new MemoryFileSource();
  await generateSynthCXR(files, { studies: 6, seed: 2, imageSize: 32 });
  const ann = JSON.parse(await readText(files, SYNTH_ANNOTATIONS_JSON));
  const dataset = await MimicCxrDataset.open(files, { tokenizer: await ReportTokenizer.load(files, 'vocab.txt') });
  const old = structuredClone(ann);
  for (const s of old.studies) delete s.sentences;
  assert.throws(
    () => groundingImages(old, dataset.studies),
    /study p\d+\/s\d+: no links between findings and report sentences \(an older SynthCXR\); regenerate the data set/,
  );
  const changed = structuredClone(ann);
  changed.studies[0].sentences[0] = 'Something else.';
  assert.throws(() => groundingImages(changed, dataset.studies), /the report's sentences \(\d+\) are not the \d+ the annotations link to .*regenerate/);
  // A data set written before follow-ups were unlinked ("… nodule. Recommend CT …"): the follow-up is not grounded.
  const study = ann.studies.find((s: any) => s.images.some((i: any) => i.findings.some((f: any) => f.area > 0)));
  const drawn = study.images.find((i: any) => i.findings.some((f: any) => f.area > 0)).findings.find((f: any) => f.area > 0);
  const count = (a: any) => groundingImages(a, dataset.studies).reduce((n, i) => n + i.targets.length, 0);
  const baseline = count(ann);
  const before = structuredClone(ann);
  const s = before.studies.indexOf(before.studies.find((x: any) => x.study_id === study.study_id));
  before.studies[s].sentences.push('Recommend CT for further evaluation.');
  before.studies[s].findings[drawn.finding].sentences.push(before.studies[s].sentences.length - 1);
  const readerStudy = dataset.studies.find((x) => x.studyId === study.study_id)!;
  readerStudy.sentences.push('Recommend CT for further evaluation.');
  assert.is(count(before), baseline);
  readerStudy.sentences.pop();
  const beyond = structuredClone(ann);
  const linked = beyond.studies.find((x: any) => x.findings.length > 0 && x.images.some((i: any) => i.findings.some((f: any) => f.area > 0)));
  for (const f of linked.findings) f.sentences = [99];
  assert.throws(() => groundingImages(beyond, dataset.studies), /finding \d links sentence 99, but the report has \d+; regenerate/);
  const other = { ...ann, studies: ann.studies.slice(1) };
  assert.throws(() => groundingImages(other, dataset.studies), /has no entry for study p\d+\/s\d+: the annotations belong to another data set/);
});

test('worked example: a mask of a non-square image on the 4×4 grid of a 128² input, a known attention map', () => {
  // Stored image 100 wide, 80 high; the finding covers x ∈ [50, 100), y ∈ [0, 40).
  const W = 100;
  const H = 80;
  const stored = new Float32Array(W * H);
  for (let y = 0; y < 40; y++) for (let x = 50; x < W; x++) stored[y * W + x] = 1;
  // Padded to 100² (10 rows on top), scaled by 1.28: x ≥ 64, y ∈ [12.8, 64). Region centres
  // lie at 16, 48, 80, 112: columns 2, 3 and rows 0, 1 are inside.
  const mask = maskToEval({ width: W, height: H, data: stored }, 128);
  const cells = cellsInMask(mask, 128, 128, 4, 4);
  assert.equal(Array.from(cells), [0, 0, 1, 1, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0]);
  assert.is(regionGrid(16), 4);
  assert.throws(() => regionGrid(12), /12 regions, not a square grid/);

  // P [B = 2, K = 16, S = 3]: everything 1 except sentences 1 and 2 of entry 1, so reading
  // another entry, slot or stride would find its maximum elsewhere.
  const K = 16;
  const S = 3;
  const P = new Float32Array(2 * K * S).fill(1);
  const column1 = [0.1, 0.2, 0.3, 0.4, 0.1, 0.2, 0.9, 0.3, 0.1, 0.1, 0.1, 0.1, 0.2, 0.2, 0.2, 0.2];
  const column2 = [0.8, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1];
  for (let k = 0; k < K; k++) {
    P[(1 * K + k) * S + 1] = column1[k];
    P[(1 * K + k) * S + 2] = column2[k];
  }
  assert.equal(Array.from(attentionColumn(P, [2, K, S], 1, 1)), Array.from(Float32Array.from(column1)));
  assert.throws(() => attentionColumn(P, [2, K, S], 1, 3), /has no entry 1, sentence 3/);
  const target = (sentence: number, type: string): GroundingTarget => ({
    sentence,
    text: `s${sentence}`,
    finding: 0,
    type: type as never,
    label: type,
    maskPath: 'm.png',
  });
  const sample = (col: number[]) => ({
    attention: attentionColumn(P, [2, K, S], 1, col === column1 ? 1 : 2),
    gridHeight: 4,
    gridWidth: 4,
    mask,
    maskHeight: 128,
    maskWidth: 128,
  });
  const hit = groundSentence('img', target(1, 'nodule'), sample(column1));
  const miss = groundSentence('img', target(2, 'effusion'), sample(column2));
  assert.ok(hit.hit, 'the maximum, region 6 (row 1, column 2), is inside');
  assert.not.ok(miss.hit, 'the maximum, region 0, is outside');
  assert.is(hit.inside, 0.25);
  // Inside: 0.3, 0.4, 0.9, 0.3 (mean 0.475, variance 0.061875); outside: six 0.1, six 0.2 (mean 0.15, variance 0.0025).
  assert.ok(Math.abs(hit.cnr! - 0.325 / Math.sqrt(0.061875 + 0.0025)) < 1e-6, `CNR ${hit.cnr}`);
  const { rows, overall } = summarizeGrounding([hit, miss], ['consolidation', 'nodule', 'effusion']);
  assert.equal(
    rows.map((r) => [r.type, r.n, r.pointingGame]),
    [
      ['nodule', 1, 1],
      ['effusion', 1, 0],
    ],
  );
  assert.is(overall.n, 2);
  assert.is(overall.pointingGame, 0.5);
  assert.is(overall.chance, 0.25);
  assert.is(overall.cnrN, 2);

  const result: GroundingResult = {
    rows,
    overall,
    images: 1,
    studies: 1,
    findings: 2,
    truncated: 0,
    noRegionInside: 0,
    rule: 'centre',
    grid: 4,
    imageSize: 128,
    sentences: [hit, miss],
  };
  assert.equal(groundingText(result), [
    'finding   n  pointing game  chance   CNR (n)',
    'nodule    1        100.0 %  25.0 %  1.28 (1)',
    'effusion  1          0.0 %  25.0 %  0.30 (1)',
    'overall   2         50.0 %  25.0 %  0.79 (2)',
  ]);
  assert.equal(groundingNotes(result), []);
  assert.equal(groundingNotes({ ...result, noRegionInside: 1, truncated: 2 }), [
    '1 of the 2 pairs have no region centre inside their mask (never a hit, chance 0)',
    "2 pairs left out: their sentence lies beyond the model's sentence slots or token budget",
  ]);
  assert.match(
    groundingMarkdown({ ...result, rule: 'overlap', noRegionInside: 1 }),
    /a region is inside when the mask overlaps it\. .* 1 of the 2 pairs have a mask that overlaps no region \(never a hit, chance 0\)\./s,
  );
  const md = groundingMarkdown(result, { run: 'runs/x', checkpoint: 'best' });
  assert.match(md, /^## Phrase grounding\n\nRun runs\/x \(best checkpoint\): /);
  assert.match(md, /\| \*\*overall\*\* \| \*\*2\*\* \| \*\*50\.0 %\*\* \| \*\*25\.0 %\*\* \| \*\*0\.79 \(2\)\*\* \|/);
  assert.match(md, /pointing game 50\.0 % \(chance 25\.0 %\), CNR 0\.79, over 2 sentence–finding pairs \(2 findings\) in 1 test images, 1 studies\./);
});

test("region rule 'overlap': a finding smaller than a region is reachable; blocks of non-integer size share a straddling pixel", () => {
  // 8×8 mask, 2×2 grid (4×4 blocks): one pixel at row 3, column 4 covers no centre (2 or 6) but lies in block (0, 1).
  const mask = new Float32Array(64);
  mask[3 * 8 + 4] = 1;
  assert.equal(Array.from(cellsInMask(mask, 8, 8, 2, 2)), [0, 0, 0, 0]);
  assert.equal(Array.from(cellsOverlappingMask(mask, 8, 8, 2, 2)), [0, 1, 0, 0]);
  // 10×10 over 3×3: blocks [0, 3.33), [3.33, 6.67), …; pixel (3, 3) spans rows and columns 3..4, i.e. blocks 0 and 1.
  const straddle = new Float32Array(100);
  straddle[3 * 10 + 3] = 1;
  assert.equal(Array.from(cellsOverlappingMask(straddle, 10, 10, 3, 3)), [1, 1, 0, 1, 1, 0, 0, 0, 0]);
  const target: GroundingTarget = { sentence: 0, text: 'A 1.0 cm nodule.', finding: 0, type: 'nodule', label: 'nodule', maskPath: 'm.png' };
  const attention = Float32Array.of(0.1, 0.6, 0.2, 0.1);
  const sample = { attention, gridHeight: 2, gridWidth: 2, mask, maskHeight: 8, maskWidth: 8 };
  const centre = groundSentence('img', target, sample);
  const overlap = groundSentence('img', target, { ...sample, rule: 'overlap' });
  assert.equal([centre.hit, centre.inside, centre.cnr], [false, 0, null]);
  assert.equal([overlap.hit, overlap.inside], [true, 0.25]);
  // Inside: 0.6 alone (variance 0); outside: 0.1, 0.2, 0.1 (mean 0.4/3).
  const m = 0.4 / 3;
  assert.ok(Math.abs(overlap.cnr! - (0.6 - m) / Math.sqrt((2 * (0.1 - m) ** 2 + (0.2 - m) ** 2) / 3)) < 1e-6, `CNR ${overlap.cnr}`);
  assert.throws(
    () => groundSentence('img', target, { ...sample, rule: 'corner' as never }),
    /img, sentence 0: rule must be one of centre, overlap, got corner/,
  );
});

test('flatten_regions orders the regions row-major; attention_r2i is [B, K regions, S sentences], a softmax over the sentences', () => {
  const probe = `
import "std/resnet.lovt"
import "std/alignment.lovt"
model Probe {
  input fmap: f32[1, 2, 3, 4]
  input zi: f32[1, 3, 4]
  input zr: f32[1, 2, 4]
  input valid: f32[1, 2]
  align = AlignmentModel(4)
  output regions = flatten_regions(fmap)
  output p = align(zi, zr, valid)[2]
}`;
  const { graph } = compile({ text: probe, name: 'grounding-probe.lovt' }, { mode: 'eval' });
  const fmap = new Float64Array(24).map((_, i) => i); // channel c, row y, column x = 12c + 4y + x
  const zi = new Float64Array(12).map((_, i) => Math.sin(i + 1));
  const zr = new Float64Array(8).map((_, i) => Math.cos(i + 1));
  const feeds = { inputs: { fmap, zi, zr, valid: Float64Array.of(1, 0) } };
  const state = Object.fromEntries(
    Object.values(graph.state).map((s: any) => [s.name, new Float64Array(s.shape.reduce((a: number, b: number) => a * b, 1)).fill(0.5)]),
  );
  const out = evaluate(graph, { ...feeds, state } as never).outputs;
  assert.equal(graph.nodes[graph.outputs.regions].shape, [1, 12, 2]);
  // Region k = (row ⌊k/4⌋, column k mod 4), channels last.
  for (let k = 0; k < 12; k++) for (let c = 0; c < 2; c++) assert.is(out.regions[k * 2 + c], 12 * c + 4 * Math.floor(k / 4) + (k % 4));
  assert.equal(graph.nodes[graph.outputs.p].shape, [1, 3, 2]);
  // Each region's weights over the sentences sum to 1; the padded sentence gets none.
  for (let k = 0; k < 3; k++) {
    assert.ok(Math.abs(out.p[k * 2] - 1) < 1e-12);
    assert.is(out.p[k * 2 + 1], 0);
  }
  const lovt = compile({ file: 'lovt-tiny.lovt' }, { mode: 'eval', set: { vocab_size: 100 } });
  assert.equal(lovt.graph.nodes[lovt.graph.outputs.attention_r2i].shape, [8, (128 / 32) ** 2, 8]);
});

test('lovt-run grounding: a missing run directory, a run without attention_r2i, a changed model file', async () => {
  assertOneLineError(lovtRun(['grounding', '/nonexistent/run']), /\/nonexistent\/run: no such run directory/);
  const dir = mkdtempSync(path.join(tmpdir(), 'lovt-grounding-'));
  try {
    // ConVIRT: global alignment only, no alignment model.
    const { model } = compile({ file: 'convirt-tiny.lovt' }, { mode: 'eval', set: { vocab_size: 100 } });
    const info = checkpointInfo({
      model: { name: model.name, path: 'models/convirt-tiny.lovt', sourceHash: model.sourceHash },
      set: { vocab_size: '100' },
      step: 3,
    });
    await saveCheckpoint(new NodeStorage(dir), ['last'], new Map(), info);
    assertOneLineError(
      lovtRun(['grounding', dir]),
      new RegExp(`is a run of ${model.name}, which has no 'attention_r2i' output .*: phrase grounding needs a LoVT run`),
    );
    await saveCheckpoint(new NodeStorage(dir), ['last'], new Map(), { ...info, model: { ...info.model, sourceHash: 'another' } });
    assertOneLineError(
      lovtRun(['grounding', dir, '--checkpoint', 'last']),
      /models\/convirt-tiny\.lovt \(or one of its imports\) has changed since .* was trained/,
    );
    assertOneLineError(lovtRun(['grounding', dir, '--checkpoint', 'best']), /has no best checkpoint \(best\.json is missing\)/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test.run();
