// The metrics of the downstream evaluation (method §6) and of phrase grounding, one import
// for the evaluation code: boxes and NMS, detection mAP and FROC, Dice, the protocol's
// confidence intervals, pointing game and CNR. Pure TypeScript (no Node, no device);
// definitions in docs/evaluation.md, "Metrics".
export * from './boxes.ts';
export * from './detection.ts';
export * from './segmentation.ts';
export * from './stats.ts';
export * from './grounding.ts';
