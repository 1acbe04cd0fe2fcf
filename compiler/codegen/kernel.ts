// The contract between WGSL generators and the executor. Most kernels are
// specialised to concrete shapes (shapes baked into the WGSL as constants) and
// bind only storage buffers, in binding order. Matmul kernels instead read
// their problem sizes from a small uniform block (`params`), so every problem
// with the same tile and structure shares one pipeline: on lavapipe each
// distinct pipeline costs LLVM 0.3-5 s at its first dispatch.

export interface Kernel {
  /** Short readable name for stats and errors, e.g. "matmul_64x64_tn". */
  name: string;
  wgsl: string;
  entryPoint: string;
  /**
   * Tensors bound at @group(0) @binding(i), in order. `tensor` is an IR node id
   * (or a planner-assigned scratch id); the last `writes` bindings are read_write.
   */
  bindings: { tensor: number; access: 'read' | 'read_write' }[];
  /** dispatchWorkgroups(x, y, z); generators fold > maxComputeWorkgroupsPerDimension into y/z. */
  workgroups: [number, number, number];
  /** Floating-point operations, for --stats and benchmarks. */
  flops: number;
  /**
   * Values of the kernel's uniform block, bound at @group(0)
   * @binding(bindings.length) as `var<uniform>` (a struct of u32 fields in
   * this order); absent when the kernel has none. A plain array: plans
   * travel as JSON (planToJSON).
   */
  params?: number[];
}

/** Bytes of a kernel's uniform binding: its params rounded up to 16 (uniform struct size rules). */
export function paramsBytes(params: number[]): number {
  return Math.max(16, Math.ceil((params.length * 4) / 16) * 16);
}

/**
 * An elementwise epilogue fused into a contraction or reduction kernel. `code`
 * is a WGSL function `fn epilogue(v: f32, i: u32) -> f32` (i = flat output index)
 * that may read `extra.length` extra storage buffers declared by `decls`, which
 * use bindings starting at `firstBinding` (the generator passes it in).
 */
export interface Epilogue {
  extra: number[]; // tensors the epilogue reads, bound after the kernel's own inputs
  render(firstBinding: number): { decls: string; code: string };
}

/** Splits a flat workgroup count over (x, y) so no dimension exceeds the device limit. */
export function foldWorkgroups(count: number, maxPerDim = 65535): [number, number, number] {
  if (count <= maxPerDim) return [Math.max(1, count), 1, 1];
  const y = Math.ceil(count / maxPerDim);
  if (y > maxPerDim) throw new Error(`dispatch of ${count} workgroups exceeds ${maxPerDim}² even when folded`);
  return [maxPerDim, y, 1];
}
