// The platform-neutral public entry of the lovt runtime: what an application
// needs to run a compiled lovt graph on any WebGPU device. It re-exports only;
// it never touches `navigator` or Node. A platform module supplies the device:
//   browser: runtime/platform/browser.ts  getBrowserDevice()
//   Node.js: runtime/platform/node.ts     getNodeDevice()
// scripts/bundle-browser.ts bundles this file with platform/browser.ts into
// dist/lovt-browser.js and fails if anything here pulls in Node-only code.
// docs/browser.md shows the whole flow.

// The graph IR and its checks (graphs arrive as JSON: validate before running).
export type { Graph, Node, OpName, DType, Shape, StateInfo, InitSpec, Attrs, AttrValue } from '../compiler/ir.ts';
export { IR_VERSION, numel, shapeStr } from '../compiler/ir.ts';
export { validateGraph, ShapeError } from '../compiler/ops/index.ts';

// Planning: graph -> kernels + memory plan (plain data; `lovtc -o` writes it as plan.json).
export type { ExecutionPlan, PlanStats, PlanOptions, EngineLimits } from '../compiler/execution-plan.ts';
export { planGraph, planToJSON, planFromJSON, DEFAULT_LIMITS } from '../compiler/execution-plan.ts';

// Training programs: a forward graph -> step (forward + backward) and apply (optimizer) graphs.
export type { FiniteCheck, OptimizerKind, OptimizerOptions, TrainingOptions, TrainingPrograms } from '../compiler/train-program.ts';
export {
  buildTrainingPrograms,
  optimizerScalars,
  gradAccName,
  optimStateName,
  LR_INPUT,
  BIAS_CORRECTION1_INPUT,
  BIAS_CORRECTION2_INPUT,
  MOMENTUM_GRAD_SCALE_INPUT,
  NONFINITE_OUTPUT,
} from '../compiler/train-program.ts';

// Device, state and execution.
export type { LovtDevice } from './device.ts';
export { openDevice } from './device.ts';
export type { HostTensor } from './state.ts';
export { StateStore, checkHostTensor } from './state.ts';
export type { ProgramOptions } from './executor.ts';
export { Program, runGraph } from './executor.ts';

// Initial state (PyTorch's init formulas, deterministic per (seed, tensor name)).
export { initState, initTensor } from './init.ts';

// The float64 reference interpreter: the oracle for checking a device's results.
export type { Feeds, Evaluation, FeedValue } from '../compiler/reference.ts';
export { evaluate } from '../compiler/reference.ts';

// Weights in and out (safetensors, as PyTorch and Hugging Face write them).
export type { SafetensorsContents, SafetensorsTensorInfo, SafetensorsDtype, TensorToWrite } from './safetensors.ts';
export { readSafetensors, writeSafetensors, SafetensorsError } from './safetensors.ts';

// Learning-rate schedules and early stopping for a training loop.
export type { ScheduleSpec, LrSchedule } from './train/lr-schedule.ts';
export { createSchedule, plateauSpec } from './train/lr-schedule.ts';
export type { EarlyStopSpec } from './train/early-stop.ts';
export { EarlyStopping } from './train/early-stop.ts';
