// Phrase grounding of a pre-trained LoVT run on SynthCXR (docs/evaluation.md, "Phrase
// grounding of a run"): for every test-split frontal image and every report sentence that
// names a finding drawn in it (synth-annotations.json links findings to the reader's
// sentence indices), the model's report→image attention of that sentence over the image
// regions against the finding's mask: pointing game, its chance level and CNR
// (runtime/eval/grounding.ts), overall and per finding type.
//
// Axes: `attention_r2i` is P [B, K, S] of the alignment model (models/std/alignment.lovt):
// axis 1 the K image regions, axis 2 the S sentence slots, softmax over the sentences (each
// region distributes its weight over the report's sentences). A sentence's map is the column
// P[b, :, s]. The regions are the layer4 map [h, w] flattened row-major (flatten_regions in
// models/std/resnet.lovt: region k = row ⌊k / w⌋, column k mod w), which is the row-major
// grid order of GroundingSample. Sentence slot s holds report sentence s (FINDINGS then
// IMPRESSION, as the reader splits them; batch.ts) while s < the sample's kept sentences.
//
// Platform-neutral: the caller opens the run (model, weights), the data set and the device.

import { optimize } from '../../compiler/passes/index.ts';
import { evalTransform, type Normalization } from '../data/augment.ts';
import { collateBatch, type ModelBatch, type PreparedSample } from '../data/batch.ts';
import type { FileSource } from '../data/fs.ts';
import { decodeImage, type GrayImage } from '../data/image.ts';
import type { MimicCxrDataset, Study } from '../data/mimic.ts';
import { SYNTH_ANNOTATIONS_JSON } from '../data/synth/dataset.ts';
import type { FindingType } from '../data/synth/phantom.ts';
import { FOLLOW_UP_SENTENCES } from '../data/synth/reports.ts';
import type { LovtDevice } from '../device.ts';
import { Program } from '../executor.ts';
import type { HostTensor } from '../safetensors.ts';
import { StateStore } from '../state.ts';
import type { TokenIds } from '../data/loader.ts';
import { checkBatchValues } from '../train/inputs.ts';
import { ATTENTION_OUTPUT, intConfig } from '../train/run-setup.ts';
import { programInputs, type CompiledModel } from '../train/trainer.ts';
import { describeDiff, diffTensors } from '../train/weights.ts';
import { contrastToNoiseRatio, pointingGame, sampleCells, type GroundingSample, type RegionRule } from './grounding.ts';
import { maskToEval, readSynthAnnotations, type SynthAnnotationFile } from './synth-tasks.ts';

/** One report sentence naming one finding drawn (non-empty mask) in one frontal image. */
export interface GroundingTarget {
  /** Sentence index in the report = the model's sentence slot. */
  sentence: number;
  text: string;
  /** Index of the finding in its study's annotations. */
  finding: number;
  type: FindingType;
  label: string;
  /** Mask PNG (255 = finding), relative to the data set root, in stored-image pixels. */
  maskPath: string;
}

/** A frontal image with the sentences to ground in it. */
export interface GroundingImage {
  /** "p<subject>/s<study>/<dicom_id>". */
  id: string;
  study: Study;
  imagePath: string;
  targets: GroundingTarget[];
}

type AnnotatedStudy = NonNullable<SynthAnnotationFile['studies']>[number];

const regenerate = 'regenerate the data set with this lovt (`lovt-run synth --out DIR`, or delete the cached --data synth directory)';

/**
 * The images of `studies` (as the reader opened them) that have something to ground, with
 * their targets from the annotations. A finding counts in an image when its mask there is
 * non-empty; every sentence linked to it is one target. The reader's sentences must be the
 * annotations' (else the links would point at other sentences).
 */
export function groundingImages(annotations: SynthAnnotationFile, studies: readonly Study[], where = SYNTH_ANNOTATIONS_JSON): GroundingImage[] {
  const byId = new Map<string, AnnotatedStudy>();
  for (const s of annotations.studies ?? []) byId.set(`${s.subject_id}/${s.study_id}`, s);
  const images: GroundingImage[] = [];
  for (const study of studies) {
    const ann = byId.get(`${study.subjectId}/${study.studyId}`);
    const name = `p${study.subjectId}/s${study.studyId}`;
    if (!ann) throw new Error(`${where} has no entry for study ${name}: the annotations belong to another data set; ${regenerate}`);
    if (!Array.isArray(ann.sentences) || ann.findings.some((f) => !Array.isArray(f.sentences))) {
      throw new Error(`${where}, study ${name}: no links between findings and report sentences (an older SynthCXR); ${regenerate}`);
    }
    const same = ann.sentences.length === study.sentences.length && ann.sentences.every((s, i) => s === study.sentences[i]);
    if (!same) {
      throw new Error(
        `${where}, study ${name}: the report's sentences (${study.sentences.length}) are not the ${ann.sentences.length} the annotations link to ` +
          `(the report or the sentence splitter changed); ${regenerate}`,
      );
    }
    for (const image of ann.images) {
      if (!study.imagePaths.includes(image.path)) continue; // not a frontal image the reader kept
      const targets: GroundingTarget[] = [];
      for (const drawn of image.findings) {
        const f = ann.findings[drawn.finding];
        if (!f) throw new Error(`${where}: image ${image.dicom_id} of study ${name} names finding ${drawn.finding}, which the study does not have`);
        // Not visible in this image: nothing to point at.
        if ((drawn.area ?? (drawn.bbox ? 1 : 0)) === 0) continue;
        for (const sentence of f.sentences!) {
          if (!(Number.isInteger(sentence) && sentence >= 0 && sentence < ann.sentences.length)) {
            throw new Error(
              `${where}, study ${name}: finding ${drawn.finding} links sentence ${sentence}, but the report has ${ann.sentences.length}; ${regenerate}`,
            );
          }
          // Data sets written before the generator knew follow-ups link them to the finding.
          if (FOLLOW_UP_SENTENCES.includes(ann.sentences[sentence])) continue;
          targets.push({ sentence, text: ann.sentences[sentence], finding: drawn.finding, type: f.type, label: f.label ?? f.type, maskPath: drawn.mask });
        }
      }
      if (targets.length) images.push({ id: `${name}/${image.dicom_id}`, study, imagePath: image.path, targets });
    }
  }
  return images;
}

/** The side of the square region grid of K regions (the layer4 map of a square image). */
export function regionGrid(regions: number): number {
  const side = Math.round(Math.sqrt(regions));
  if (side * side !== regions)
    throw new Error(`${ATTENTION_OUTPUT} has ${regions} regions, not a square grid: grounding needs the layer4 map of a square image`);
  return side;
}

/** Sentence `s`'s attention over the K regions of batch entry `b` of P [B, K, S] (row-major regions). */
export function attentionColumn(attention: ArrayLike<number>, shape: readonly number[], b: number, s: number): Float32Array {
  const [B, K, S] = shape;
  if (shape.length !== 3 || b >= B || s >= S) throw new Error(`attention [${shape.join(', ')}] has no entry ${b}, sentence ${s}`);
  const out = new Float32Array(K);
  for (let k = 0; k < K; k++) out[k] = attention[(b * K + k) * S + s];
  return out;
}

/** A mask PNG as 0/1 (non-zero = finding). */
export function binaryMask(mask: GrayImage): GrayImage {
  return { ...mask, data: Float32Array.from(mask.data, (v) => (v > 0 ? 1 : 0)) };
}

/** One grounded sentence: its target and the sample scored. */
export interface GroundedSentence {
  image: string;
  target: GroundingTarget;
  sample: GroundingSample;
  hit: boolean;
  /** Fraction of the regions inside the mask (the chance of a random region). */
  inside: number;
  /** null when no region centre falls inside (or outside) the mask. */
  cnr: number | null;
}

export interface GroundingRow {
  type: string;
  /** Sentence–finding pairs. */
  n: number;
  pointingGame: number;
  chance: number;
  /** Mean CNR over the pairs where it is defined (cnrN of them); null when none. */
  cnr: number | null;
  cnrN: number;
}

export interface GroundingResult {
  /** Per finding type (in the generator's order), then `overall`. */
  rows: GroundingRow[];
  overall: GroundingRow;
  /** Images with at least one pair, and their studies. */
  images: number;
  studies: number;
  /** Distinct (image, finding) pairs. */
  findings: number;
  /** Pairs whose sentence the model never saw (beyond its S sentence slots or T tokens). */
  truncated: number;
  /** Scored pairs whose mask holds no region (by the rule): never a hit (with 'centre', a finding smaller than a region). */
  noRegionInside: number;
  /** Which regions count as inside a mask. */
  rule: RegionRule;
  grid: number;
  imageSize: number;
  sentences: GroundedSentence[];
}

/** Scores one pair: the attention column on the grid against the mask in eval-image pixels. */
export function groundSentence(image: string, target: GroundingTarget, sample: GroundingSample): GroundedSentence {
  const cells = sampleCells(sample, `${image}, sentence ${target.sentence}`);
  const inside = cells.reduce((a, b) => a + b, 0);
  const hit = pointingGame([sample]).hits === 1;
  const cnr = inside > 0 && inside < cells.length ? contrastToNoiseRatio(sample.attention, cells) : null;
  return { image, target, sample, hit, inside: inside / cells.length, cnr };
}

/** The table rows from scored pairs. */
export function summarizeGrounding(sentences: readonly GroundedSentence[], types: readonly string[]): { rows: GroundingRow[]; overall: GroundingRow } {
  const row = (type: string, list: readonly GroundedSentence[]): GroundingRow => {
    const cnrs = list.map((s) => s.cnr).filter((c): c is number => c !== null);
    const game = pointingGame(list.map((s) => s.sample));
    return {
      type,
      n: list.length,
      pointingGame: game.accuracy,
      chance: game.chance,
      cnr: cnrs.length ? cnrs.reduce((a, b) => a + b, 0) / cnrs.length : null,
      cnrN: cnrs.length,
    };
  };
  const present = types.filter((t) => sentences.some((s) => s.target.type === t));
  return {
    rows: present.map((t) =>
      row(
        t,
        sentences.filter((s) => s.target.type === t),
      ),
    ),
    overall: row('overall', sentences),
  };
}

export interface GroundingRunOptions {
  device: LovtDevice;
  /** The LoVT model compiled in eval mode. */
  model: CompiledModel;
  /** The checkpoint's tensors (parameters and buffers by state name; optimizer moments are ignored). */
  weights: Map<string, HostTensor>;
  /** The data set opened with the run's tokenizer; its test split is evaluated. */
  dataset: MimicCxrDataset;
  /** The data set root: synth-annotations.json and the masks. */
  source: FileSource;
  /** The pixel normalisation of pre-training (the train split's statistics). */
  norm: Normalization;
  tokenIds: TokenIds;
  /** Which regions count as inside a mask (default 'centre'). */
  rule?: RegionRule;
  /** Finding types in table order (default: as they first appear). */
  types?: readonly string[];
  onProgress?: (done: number, total: number) => void;
}

/** The eval forward of a checkpoint: the state uploaded once, then one run per batch. */
export async function evalProgram(device: LovtDevice, model: CompiledModel, weights: Map<string, HostTensor>): Promise<{ program: Program; destroy(): void }> {
  const graph = model.graph;
  const d = diffTensors(
    Object.values(graph.state).map((s) => ({ name: s.name, shape: s.shape, dtype: s.dtype })),
    weights,
    { ignorable: () => true },
  );
  if (d.missing.length || d.misshaped.length) throw new Error(`the checkpoint does not fit the model ${model.model.name}: ${describeDiff(d)}`);
  const store = new StateStore(device);
  let program: Program | undefined;
  try {
    program = await Program.create(device, optimize(graph), store, { label: 'eval forward' });
    for (const [name, m] of d.matched) store.upload(name, m.tensor.data);
  } catch (err) {
    store.destroy();
    throw err;
  }
  const p = program;
  return {
    program: p,
    destroy: () => {
      p.destroy();
      store.destroy();
    },
  };
}

/** The collated batches of `images` (the last one filled up by repeating its images; `valid` counts the real ones). */
export async function* groundingBatches(
  images: readonly GroundingImage[],
  opts: { batch: number; imageSize: number; maxTokens: number; maxSentences: number; dataset: MimicCxrDataset; norm: Normalization; tokenIds: TokenIds },
): AsyncGenerator<{ batch: ModelBatch; images: GroundingImage[]; valid: number }> {
  for (let start = 0; start < images.length; start += opts.batch) {
    const chunk = images.slice(start, start + opts.batch);
    const samples: PreparedSample[] = [];
    for (const img of chunk) {
      const loaded = await opts.dataset.loadImagePath(img.imagePath);
      if (!loaded) throw new Error(`cannot read the test image ${img.imagePath} (${img.id}): ${opts.dataset.problems.at(-1)?.detail ?? 'unreadable'}`);
      samples.push({ id: img.id, image: evalTransform(loaded, opts.norm, opts.imageSize), sentenceTokens: img.study.sentenceTokens });
    }
    const valid = samples.length;
    for (let i = 0; samples.length < opts.batch; i++) samples.push(samples[i % valid]);
    yield { batch: collateBatch(samples, { maxLength: opts.maxTokens, maxSentences: opts.maxSentences, ...opts.tokenIds }), images: chunk, valid };
  }
}

/**
 * Runs the eval graph over the test split's images that have findings named in their
 * report and scores every sentence–finding pair.
 */
export async function runGrounding(o: GroundingRunOptions): Promise<GroundingResult> {
  const graph = o.model.graph;
  if (!(ATTENTION_OUTPUT in graph.outputs)) {
    throw new Error(
      `the model ${o.model.model.name} has no output '${ATTENTION_OUTPUT}' (report→image attention over regions and sentences): ` +
        `phrase grounding needs a LoVT model (its outputs: ${Object.keys(graph.outputs).join(', ')})`,
    );
  }
  const shape = graph.nodes[graph.outputs[ATTENTION_OUTPUT]].shape;
  const [B, K, S] = shape;
  const imageSize = intConfig(o.model, 'image_size');
  const grid = regionGrid(K);
  const annotations = await readSynthAnnotations(o.source, 'phrase grounding');
  const images = groundingImages(annotations, o.dataset.split('test'), `${o.source.description}/${SYNTH_ANNOTATIONS_JSON}`);
  if (!images.length) {
    throw new Error(`${o.source.description}: no test-split image shows a finding named in its report; use a larger data set (lovt-run synth --studies N)`);
  }
  const types = o.types ?? [...new Set(images.flatMap((i) => i.targets.map((t) => t.type)))];
  const sentences: GroundedSentence[] = [];
  let truncated = 0;
  let done = 0;
  const run = await evalProgram(o.device, o.model, o.weights);
  try {
    const batches = groundingBatches(images, {
      batch: B,
      imageSize,
      maxTokens: intConfig(o.model, 'max_tokens'),
      maxSentences: S,
      dataset: o.dataset,
      norm: o.norm,
      tokenIds: o.tokenIds,
    });
    for await (const { batch, images: chunk, valid } of batches) {
      const inputs = programInputs(run.program.graph, batch);
      checkBatchValues(run.program.graph, inputs, `the test batch of ${chunk[0].id}…`);
      const attention = (await run.program.run(inputs, [ATTENTION_OUTPUT]))[ATTENTION_OUTPUT];
      for (let b = 0; b < valid; b++) {
        const img = chunk[b];
        for (const target of img.targets) {
          if (target.sentence >= batch.sentenceCounts[b]) {
            truncated++;
            continue;
          }
          const stored = binaryMask(decodeImage(await o.source.readFile(target.maskPath), target.maskPath));
          const sample: GroundingSample = {
            attention: attentionColumn(attention, shape, b, target.sentence),
            gridHeight: grid,
            gridWidth: grid,
            mask: maskToEval(stored, imageSize),
            maskHeight: imageSize,
            maskWidth: imageSize,
            rule: o.rule ?? 'centre',
          };
          sentences.push(groundSentence(img.id, target, sample));
        }
      }
      done += valid;
      o.onProgress?.(done, images.length);
    }
  } finally {
    run.destroy();
  }
  if (!sentences.length) throw new Error(`all ${truncated} sentences naming a finding lie beyond the model's ${S} sentence slots or its token budget`);
  const { rows, overall } = summarizeGrounding(sentences, types);
  const scored = new Set(sentences.map((s) => s.image));
  return {
    rows,
    overall,
    images: scored.size,
    studies: new Set(images.filter((i) => scored.has(i.id)).map((i) => i.study.studyId)).size,
    findings: new Set(sentences.map((s) => `${s.image}#${s.target.finding}`)).size,
    truncated,
    noRegionInside: sentences.filter((s) => s.inside === 0).length,
    rule: o.rule ?? 'centre',
    grid,
    imageSize,
    sentences,
  };
}

const pct = (v: number) => (Number.isFinite(v) ? `${(100 * v).toFixed(1)} %` : '–');
const num = (v: number | null) => (v === null ? '–' : v.toFixed(2));

/** The one-line summary, e.g. "pointing game 41.2 % (chance 18.0 %), CNR 0.83, over 57 findings in 40 test images". */
export function groundingSummaryLine(r: GroundingResult): string {
  return (
    `pointing game ${pct(r.overall.pointingGame)} (chance ${pct(r.overall.chance)}), CNR ${num(r.overall.cnr)}, ` +
    `over ${r.overall.n} sentence–finding pairs (${r.findings} findings) in ${r.images} test images`
  );
}

/** What the numbers leave out or cannot reach, as sentences without the final period. */
export function groundingNotes(r: GroundingResult): string[] {
  const notes: string[] = [];
  if (r.noRegionInside) {
    const what = r.rule === 'centre' ? 'no region centre inside their mask' : 'a mask that overlaps no region';
    notes.push(`${r.noRegionInside} of the ${r.overall.n} pairs have ${what} (never a hit, chance 0)`);
  }
  if (r.truncated) notes.push(`${r.truncated} pairs left out: their sentence lies beyond the model's sentence slots or token budget`);
  return notes;
}

/** The table rows as text columns: finding type, n, pointing game, chance, CNR (n). */
export function groundingTable(r: GroundingResult): string[][] {
  return [...r.rows, r.overall].map((row) => [row.type, String(row.n), pct(row.pointingGame), pct(row.chance), `${num(row.cnr)} (${row.cnrN})`]);
}

export const GROUNDING_HEADER = ['finding', 'n', 'pointing game', 'chance', 'CNR (n)'];

/** The table as aligned text lines (the first column left-aligned, the others right). */
export function groundingText(r: GroundingResult): string[] {
  const rows = [GROUNDING_HEADER, ...groundingTable(r)];
  const widths = GROUNDING_HEADER.map((_, c) => Math.max(...rows.map((row) => row[c].length)));
  return rows.map((row) => row.map((cell, c) => (c === 0 ? cell.padEnd(widths[c]) : cell.padStart(widths[c]))).join('  '));
}

/** The result as a markdown section (for a run's report and the evaluation results). */
export function groundingMarkdown(r: GroundingResult, opts: { title?: string; run?: string; checkpoint?: string } = {}): string {
  const rows = groundingTable(r);
  const lines = [
    `## ${opts.title ?? 'Phrase grounding'}`,
    '',
    `${opts.run ? `Run ${opts.run}${opts.checkpoint ? ` (${opts.checkpoint} checkpoint)` : ''}: ` : ''}` +
      `for every sentence of a test-split report that names a finding drawn in the image, the report→image attention \`${ATTENTION_OUTPUT}\` ` +
      `of that sentence over the ${r.grid}×${r.grid} regions against the finding's mask; a region is inside when ${r.rule === 'centre' ? 'the mask holds its centre pixel' : 'the mask overlaps it'}. ` +
      `Pointing game: the most attended region lies inside the mask; ` +
      `chance: the fraction of regions inside (a random region); CNR: contrast-to-noise ratio of the attention inside vs outside ` +
      `(over the pairs with regions on both sides, n in brackets).`,
    '',
    `| ${GROUNDING_HEADER.join(' | ')} |`,
    `|${GROUNDING_HEADER.map((_, i) => (i === 0 ? '---' : '---:')).join('|')}|`,
    ...rows.map((cells, i) => `| ${(i === rows.length - 1 ? cells.map((c) => `**${c}**`) : cells).join(' | ')} |`),
    '',
    `${groundingSummaryLine(r)}, ${r.studies} studies.` +
      groundingNotes(r)
        .map((n) => ` ${n}.`)
        .join(''),
    '',
  ];
  return lines.join('\n');
}
