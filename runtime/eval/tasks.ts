// The evaluation tasks by name and the suites that group them (method §6): each task is
// its data (a SynthCXR task of synth-tasks.ts), its head (a model in models/eval/, with a
// warm-up variant for fine-tune heads), frozen or fine-tuned encoder, its metric, the LR
// grid, batch size, early-stopping patience, warm-up steps and epoch cap. What a head's
// targets are and how its outputs become the metric is the task kind's adapter
// (segmentation: `mask` in, micro Dice of `logits` out). Platform-neutral; the head
// trainer (head-trainer.ts) trains any entry. Adding a task: docs/evaluation.md.
import { SYNTH_TASKS, type SynthTaskKind } from './synth-tasks.ts';
import type { LabelledBox, ScoredBox } from './boxes.ts';
import { detectionMAP, type DetectionImage } from './detection.ts';
import type { ProtocolTask } from './protocol.ts';
import { DiceAccumulator } from './segmentation.ts';
import { YOLO_OUTPUTS, yoloDetections, yoloTargets } from './yolo.ts';

/** What a task's head reads besides the encoder's maps or image: one sample's targets. */
export interface SampleTargets {
  /** Segmentation: 0/1, imageSize² (the union of the task's masks). */
  mask?: Float32Array;
  /** Detection: boxes in eval-image pixels, label = class id. */
  boxes?: LabelledBox[];
}

export interface AdapterOptions {
  imageSize: number;
  /** The head's fixed batch size. */
  batch: number;
  /** Classes of the task (detection: its finding types). */
  classes: number;
}

/** Turns the head's read-back outputs of evaluation batches into the task's metric. */
export interface MetricAccumulator {
  /** One batch: `targets` of its `valid` real samples (a padded batch's repeats left out). */
  add(outputs: Record<string, Float32Array | Int32Array>, targets: readonly SampleTargets[], valid: number): void;
  /** The metric over everything added (a fraction; higher is better). */
  value(): number;
}

/** How a kind of task talks to its head. */
export interface TaskAdapter {
  kind: SynthTaskKind;
  /** The head's target inputs for one batch (`targets.length` = the batch size). */
  targets(targets: readonly SampleTargets[], opts: AdapterOptions): Record<string, Float32Array>;
  /** The head outputs an evaluation batch reads back. */
  outputs: readonly string[];
  accumulator(opts: AdapterOptions): MetricAccumulator;
}

const sigmoid = (x: number) => 1 / (1 + Math.exp(-x));

/**
 * Segmentation heads: input `mask` f32[batch, 1, S, S]; output `logits`; the metric is
 * micro Dice over every test pixel, a pixel positive when sigmoid(logit) ≥ 0.5.
 */
export const SEGMENTATION_ADAPTER: TaskAdapter = {
  kind: 'segmentation',
  outputs: ['logits'],
  targets(targets, { imageSize }) {
    const plane = imageSize * imageSize;
    const mask = new Float32Array(targets.length * plane);
    targets.forEach((t, i) => {
      if (!t.mask || t.mask.length !== plane) throw new Error(`segmentation targets: sample ${i} has no ${imageSize}×${imageSize} mask`);
      mask.set(t.mask, i * plane);
    });
    return { mask };
  },
  accumulator({ imageSize }) {
    const dice = new DiceAccumulator(1);
    const plane = imageSize * imageSize;
    return {
      add(outputs, targets, valid) {
        const logits = outputs.logits;
        const probabilities = new Float32Array(valid * plane);
        for (let i = 0; i < probabilities.length; i++) probabilities[i] = sigmoid(logits[i]);
        dice.add(probabilities, SEGMENTATION_ADAPTER.targets(targets.slice(0, valid), { imageSize, batch: valid, classes: 1 }).mask, [
          valid,
          1,
          imageSize,
          imageSize,
        ]);
      },
      value: () => dice.dice()[0],
    };
  },
};

/** What the detection adapter needs of runtime/eval/yolo.ts (the issue-11 contract's API). */
export interface YoloApi {
  YOLO_OUTPUTS: readonly string[];
  yoloTargets(boxes: readonly (readonly LabelledBox[])[], opts: { imageSize: number; classes: number; batch: number }): Record<string, Float32Array>;
  yoloDetections(outputs: Record<string, Float32Array | Int32Array>, opts: { imageSize: number; classes: number; batch: number; valid: number }): ScoredBox[][];
}

/**
 * Detection heads (YOLOv3): the target inputs and the outputs read back are yolo.ts's; the
 * metric is mAP over IoU 0.40:0.05:0.75 (detectionMAP) of the decoded detections (after
 * confidence 0.2 and NMS 0.4) against the valid images' boxes.
 */
export function detectionAdapter(yolo: YoloApi): TaskAdapter {
  return {
    kind: 'detection',
    outputs: yolo.YOLO_OUTPUTS,
    targets: (targets, { imageSize, classes }) =>
      yolo.yoloTargets(
        targets.map((t) => t.boxes ?? []),
        { imageSize, classes, batch: targets.length },
      ),
    accumulator({ imageSize, classes, batch }) {
      const images: DetectionImage[] = [];
      return {
        add(outputs, targets, valid) {
          const detections = yolo.yoloDetections(outputs, { imageSize, classes, batch, valid });
          for (let i = 0; i < valid; i++) images.push({ detections: detections[i], truths: targets[i].boxes ?? [] });
        },
        value: () => detectionMAP(images, { classes }).map,
      };
    },
  };
}

/** The adapters by task kind. */
export const TASK_ADAPTERS: Partial<Record<SynthTaskKind, TaskAdapter>> = {
  segmentation: SEGMENTATION_ADAPTER,
  detection: detectionAdapter({ YOLO_OUTPUTS, yoloTargets, yoloDetections }),
};

export interface EvalTask extends ProtocolTask {
  /** SynthCXR task data (synth-tasks.ts SYNTH_TASKS). */
  data: string;
  /** The head: a file of models/eval/ and the model in it. */
  head: { file: string; model: string };
  /** frozen: the head trains on the encoder's cached features; finetune: the whole encoder trains. */
  encoder: 'frozen' | 'finetune';
  /** Fine-tune: the variant of the head with `backbone` frozen, trained for `warmupSteps` steps at `warmupLr` first. */
  warmup?: { model: string; steps: number; lr: number };
  batch: number;
  /** Early stopping on the validation metric after this many epochs without improvement (method §6: 10; 20 for small tasks). */
  stopPatience: number;
  /** At most this many epochs per run (--max-epochs overrides it). */
  maxEpochs: number;
}

/** Method §6: the learning-rate grids of the linear, U-Net and YOLOv3 protocols. */
export const LINEAR_LR_GRID: readonly number[] = [3e-1, 1e-1, 3e-2, 1e-2, 3e-3, 1e-3];
export const UNET_LR_GRID: readonly number[] = [1e-3, 3e-4, 1e-4, 3e-5, 1e-5];
export const YOLO_LR_GRID: readonly number[] = [1e-3, 3e-4, 1e-4];
/** Fine-tune warm-up (method §6): backbone frozen for 100 steps (20 for small tasks) at lr 1e-3. */
export const WARMUP_LR = 1e-3;

export const EVAL_TASKS: Readonly<Record<string, EvalTask>> = {
  'synth-seg-linear': {
    name: 'synth-seg-linear',
    metric: 'Dice',
    lrGrid: [...LINEAR_LR_GRID],
    data: 'synth-seg',
    head: { file: 'segmentation.lovt', model: 'LinearSegmentation' },
    encoder: 'frozen',
    batch: 8,
    stopPatience: 10,
    maxEpochs: 40,
  },
  // U-Net and YOLOv3 (models/eval/segmentation.lovt, yolov3.lovt). SynthCXR is a small task:
  // the fine-tune warm-up is 20 steps (method §6).
  'synth-seg-unet-frozen': {
    name: 'synth-seg-unet-frozen',
    metric: 'Dice',
    lrGrid: [...UNET_LR_GRID],
    data: 'synth-seg',
    head: { file: 'segmentation.lovt', model: 'UNetFrozen' },
    encoder: 'frozen',
    batch: 8,
    stopPatience: 10,
    maxEpochs: 30,
  },
  'synth-seg-unet-finetune': {
    name: 'synth-seg-unet-finetune',
    metric: 'Dice',
    lrGrid: [...UNET_LR_GRID],
    data: 'synth-seg',
    head: { file: 'segmentation.lovt', model: 'UNetFinetune' },
    encoder: 'finetune',
    warmup: { model: 'UNetFinetuneWarmup', steps: 20, lr: WARMUP_LR },
    batch: 8,
    stopPatience: 10,
    maxEpochs: 30,
  },
  'synth-det-yolo-frozen': {
    name: 'synth-det-yolo-frozen',
    metric: 'mAP',
    lrGrid: [...YOLO_LR_GRID],
    data: 'synth-det',
    head: { file: 'yolov3.lovt', model: 'YoloV3Frozen' },
    encoder: 'frozen',
    batch: 8,
    stopPatience: 10,
    maxEpochs: 30,
  },
  'synth-det-yolo-finetune': {
    name: 'synth-det-yolo-finetune',
    metric: 'mAP',
    lrGrid: [...YOLO_LR_GRID],
    data: 'synth-det',
    head: { file: 'yolov3.lovt', model: 'YoloV3Finetune' },
    encoder: 'finetune',
    warmup: { model: 'YoloV3FinetuneWarmup', steps: 20, lr: WARMUP_LR },
    batch: 8,
    stopPatience: 10,
    maxEpochs: 30,
  },
};

/** Named lists of tasks; `synth` is every registered SynthCXR task. */
export const EVAL_SUITES: Readonly<Record<string, readonly string[]>> = {
  'synth-linear': ['synth-seg-linear'],
  synth: Object.values(EVAL_TASKS)
    .filter((t) => t.data in SYNTH_TASKS)
    .map((t) => t.name),
};

/** A task by name, or an error listing the known ones. */
export function evalTask(name: string): EvalTask {
  const t = EVAL_TASKS[name];
  if (!t) throw new Error(`unknown task '${name}' (--task); the tasks are ${Object.keys(EVAL_TASKS).join(', ')}`);
  return t;
}

/** The adapter of a task's kind (an error when the kind has none yet). */
export function taskAdapter(task: EvalTask): TaskAdapter {
  const kind = SYNTH_TASKS[task.data]?.kind;
  if (!kind) throw new Error(`task ${task.name}: unknown data '${task.data}' (the SynthCXR tasks are ${Object.keys(SYNTH_TASKS).join(', ')})`);
  const adapter = TASK_ADAPTERS[kind];
  if (!adapter) throw new Error(`task ${task.name}: no ${kind} adapter in this build (runtime/eval/tasks.ts TASK_ADAPTERS)`);
  return adapter;
}

/**
 * The tasks of `--task` (repeatable) and `--suite`, in the order given, each once;
 * unknown names are an error listing the known ones; neither given is an error.
 */
export function resolveTasks(tasks: readonly string[], suite?: string): EvalTask[] {
  const names: string[] = [];
  if (suite !== undefined) {
    const list = EVAL_SUITES[suite];
    if (!list)
      throw new Error(
        `unknown suite '${suite}' (--suite); the suites are ${Object.entries(EVAL_SUITES)
          .map(([k, v]) => `${k} (${v.join(', ')})`)
          .join(', ')}`,
      );
    names.push(...list);
  }
  names.push(...tasks);
  if (names.length === 0) throw new Error(`give --task NAME (${Object.keys(EVAL_TASKS).join(', ')}) or --suite NAME (${Object.keys(EVAL_SUITES).join(', ')})`);
  return [...new Set(names)].map(evalTask);
}
