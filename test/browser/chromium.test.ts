// The same compiled training programs give the same results in a browser tab
// (headless Chromium, WebGPU on SwiftShader) as under Node (Dawn on lavapipe),
// and both agree with the float64 reference interpreter.
//
// Node compiles the example's tiny contrastive model once (autodiff and the
// optimizer give the step and apply graphs), draws the initial state and three
// batches, and serves them with the runtime bundle from a 127.0.0.1 server. The
// page (test/browser/page.html) trains three Adam steps with the bundled
// examples/browser/train-loop.ts; Node runs the very same module on its own
// device. Each device plans its own kernels from the same graphs, as
// Program.create does (CPU adapters get the subgroup GEMM templates). Losses
// must agree to 1e-5.
//
// Without WebGPU in Chromium (or without Chromium) this fails, saying what is
// missing: it never passes by skipping.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import http from 'node:http';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { AddressInfo } from 'node:net';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { bundleApp, bundleRuntime, ROOT } from '../../scripts/bundle-browser.ts';
import { buildTinyContrastive, tinyBatch, TINY_CONFIG } from '../../examples/browser/tiny-model.ts';
import { compileTraining, encodeBatches, trainSteps, type CompiledTraining, type TrainRunResult } from '../../examples/browser/train-loop.ts';
import { evaluate, initState, optimizerScalars, writeSafetensors, type HostTensor, type OptimizerOptions } from '../../runtime/index.ts';
import { getNodeDevice } from '../../runtime/platform/node.ts';
import { assertClose } from '../gpu/reference-check.ts';

/** The Chromium binary (Debian's package; scripts/setup-system.sh installs it). */
const CHROMIUM = process.env.LOVT_CHROMIUM ?? '/usr/bin/chromium';
/** Extra flags for experiments on other machines, e.g. LOVT_CHROMIUM_ARGS=--use-webgpu-adapter=swiftshader. */
const EXTRA_ARGS = (process.env.LOVT_CHROMIUM_ARGS ?? '').split(/\s+/).filter(Boolean);

/**
 * Flags that give headless Chromium a WebGPU adapter without a GPU: on this
 * machine it is Dawn's SwiftShader (Vulkan on the CPU) fallback adapter.
 * --enable-unsafe-webgpu is the one WebGPU needs on Linux; the Vulkan/ANGLE
 * flags let a machine with a real Vulkan GPU use it; the rest keep the run
 * hermetic (no network beyond our 127.0.0.1 server, no first-run UI, no sync).
 * --headless=new comes from here, not from Playwright (headless: false below).
 */
export const CHROMIUM_WEBGPU_ARGS = [
  '--headless=new',
  '--no-sandbox',
  '--enable-unsafe-webgpu',
  '--enable-features=Vulkan',
  '--use-angle=vulkan',
  '--disable-gpu-sandbox',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  ...EXTRA_ARGS,
];

const SEED = 7;
const LR = 0.01;
const OPTIMIZER: OptimizerOptions = { kind: 'adam' };
const BATCHES = [tinyBatch(TINY_CONFIG, 1, 11), tinyBatch(TINY_CONFIG, 2, 12), tinyBatch(TINY_CONFIG, 1, 13)];

/** Time budget for training in the page (shader compiles on a software WebGPU device dominate). */
const PAGE_TIMEOUT_MS = 60_000;

function initialState(c: CompiledTraining): Record<string, HostTensor> {
  return { ...initState(c.step, SEED), ...initState(c.apply, SEED) };
}

/** The files the page downloads, by URL path. */
async function siteFiles(c: CompiledTraining, state: Record<string, HostTensor>): Promise<Map<string, { type: string; body: string | Uint8Array }>> {
  const runtime = await bundleRuntime();
  const loop = await bundleApp(path.join(ROOT, 'examples/browser/train-loop.ts'), { runtimeUrl: '/lovt-browser.js' });
  const js = 'text/javascript; charset=utf-8';
  const stateShapes = { ...c.step.state, ...c.apply.state };
  const stateFile = writeSafetensors(Object.fromEntries(Object.entries(state).map(([name, data]) => [name, { shape: stateShapes[name].shape, data }])));
  return new Map<string, { type: string; body: string | Uint8Array }>([
    ['/', { type: 'text/html; charset=utf-8', body: readFileSync(path.join(ROOT, 'test/browser/page.html'), 'utf8') }],
    ['/lovt-browser.js', { type: js, body: runtime.code }],
    ['/train-loop.js', { type: js, body: loop.code }],
    ['/case.json', { type: 'application/json', body: JSON.stringify({ compiled: c, seed: SEED, lr: LR }) }],
    ['/state.safetensors', { type: 'application/octet-stream', body: stateFile }],
    ['/batches.safetensors', { type: 'application/octet-stream', body: encodeBatches(c.step, BATCHES) }],
  ]);
}

async function serve(files: Map<string, { type: string; body: string | Uint8Array }>): Promise<{ url: string; close: () => Promise<void> }> {
  const server = http.createServer((req, res) => {
    const pathname = new URL(req.url ?? '/', 'http://127.0.0.1').pathname;
    if (pathname === '/favicon.ico') {
      res.writeHead(204).end(); // asked for by every page; a 404 would read as a page error
      return;
    }
    const file = files.get(pathname);
    if (!file) {
      res.writeHead(404, { 'content-type': 'text/plain' }).end(`not found: ${req.url}`);
      return;
    }
    res.writeHead(200, { 'content-type': file.type, 'cache-control': 'no-store' }).end(file.body);
  });
  await new Promise<void>((resolve, reject) => server.once('error', reject).listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return { url: `http://127.0.0.1:${port}/`, close: () => new Promise((resolve) => server.close(() => resolve())) };
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what} took longer than ${ms / 1000} s`)), ms)));
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

type PageResult = Omit<TrainRunResult, 'outputs' | 'state'> & {
  outputs: Record<string, number[]>[];
  state: Record<string, number[]>;
  initMismatches: string[];
  userAgent: string;
};

/** Launches Chromium on a fresh profile, opens the page and trains there. */
async function runInChromium(url: string): Promise<PageResult> {
  if (!existsSync(CHROMIUM))
    throw new Error(
      `Chromium is not installed at ${CHROMIUM}: run 'bash scripts/setup-system.sh' (Debian package chromium) or set LOVT_CHROMIUM to a Chromium binary`,
    );
  const profile = mkdtempSync(path.join(os.tmpdir(), 'lovt-chromium-'));
  let context: BrowserContext | undefined;
  const pageErrors: string[] = [];
  try {
    context = await chromium.launchPersistentContext(profile, { executablePath: CHROMIUM, headless: false, args: CHROMIUM_WEBGPU_ARGS, timeout: 30_000 });
    const page: Page = context.pages()[0] ?? (await context.newPage());
    page.on('pageerror', (e) => pageErrors.push(e.message));
    page.on('console', (m) => m.type() === 'error' && pageErrors.push(m.text()));
    await page.goto(url);
    try {
      await page.waitForFunction(() => (window as unknown as { lovtReady?: boolean }).lovtReady === true, undefined, { timeout: 20_000 });
    } catch {
      throw new Error(`the test page never became ready; page errors: ${pageErrors.join(' | ') || 'none'}`);
    }
    const problem = await page.evaluate(() => (window as unknown as { lovtWebGPUProblem: () => Promise<string | null> }).lovtWebGPUProblem());
    if (problem)
      throw new Error(
        `WebGPU is missing in headless Chromium (${CHROMIUM}, flags ${CHROMIUM_WEBGPU_ARGS.join(' ')}): ${problem} ` +
          'Chromium on Linux exposes WebGPU only with --enable-unsafe-webgpu, and needs a Vulkan driver or its built-in SwiftShader for an adapter; ' +
          'try LOVT_CHROMIUM_ARGS=--use-webgpu-adapter=swiftshader, and see docs/browser.md.',
      );
    try {
      return await withTimeout(
        page.evaluate(() => (window as unknown as { lovtRunCase: () => Promise<PageResult> }).lovtRunCase()),
        PAGE_TIMEOUT_MS,
        'training in Chromium',
      );
    } catch (e) {
      const progress = await page.textContent('#log', { timeout: 1000 }).catch(() => null);
      throw new Error(`${(e as Error).message}; the page's log: ${progress?.trim().split('\n').join(' | ') ?? 'unreadable'}`);
    }
  } catch (e) {
    const extra = pageErrors.length ? ` (page errors: ${pageErrors.join(' | ')})` : '';
    throw new Error(`${(e as Error).message}${extra}`);
  } finally {
    await context?.close().catch(() => undefined);
    rmSync(profile, { recursive: true, force: true });
  }
}

/** The float64 reference of the same training: step and apply chained through evaluate(). */
function referenceTraining(c: CompiledTraining, initial: Record<string, HostTensor>): { losses: number[]; outputs: Record<string, Float64Array>[] } {
  const state: Record<string, ArrayLike<number>> = { ...initial };
  const losses: number[] = [];
  const outputs: Record<string, Float64Array>[] = [];
  BATCHES.forEach((batch, i) => {
    const step = evaluate(c.step, { inputs: batch, state });
    losses.push(step.outputs[c.loss][0]);
    outputs.push(step.outputs);
    Object.assign(state, step.updates);
    const apply = evaluate(c.apply, { inputs: optimizerScalars(i + 1, LR, c.optimizer), state });
    Object.assign(state, apply.updates);
  });
  return { losses, outputs };
}

test('a compiled graph trains to the same losses in headless Chromium and under Node (1e-5), matching the float64 reference', async () => {
  // Compiled once under Node; each device plans its own kernels from the same graphs (as Program.create always does).
  const compiled = compileTraining(buildTinyContrastive(TINY_CONFIG), 'loss', OPTIMIZER);
  const initial = initialState(compiled);
  const site = await serve(await siteFiles(compiled, initial));
  let browser: PageResult;
  const started = performance.now();
  try {
    browser = await runInChromium(site.url);
  } finally {
    await site.close();
  }
  const browserMs = performance.now() - started;
  const node = await trainSteps(await getNodeDevice(), compiled, initial, BATCHES, { lr: LR });
  const nodeMs = performance.now() - started - browserMs;
  const reference = referenceTraining(compiled, initial);
  const maxDiff = Math.max(...browser.losses.map((b, t) => Math.abs(b - node.losses[t])));
  console.log(
    `  browser (${browser.device}) losses ${browser.losses.map((l) => l.toFixed(7)).join(', ')}; ` +
      `node (${node.device}) ${node.losses.map((l) => l.toFixed(7)).join(', ')}; max |diff| ${maxDiff.toExponential(2)}; ` +
      `browser ${(browserMs / 1000).toFixed(1)} s, node ${(nodeMs / 1000).toFixed(1)} s`,
  );

  assert.equal(browser.initMismatches, [], 'initState(graph, seed) in the page gives the same bits as under Node');
  assert.is(browser.losses.length, BATCHES.length);
  for (let t = 0; t < BATCHES.length; t++) {
    const [b, n, r] = [browser.losses[t], node.losses[t], reference.losses[t]];
    assert.ok(Math.abs(b - n) <= 1e-5, `step ${t + 1}: browser loss ${b} vs node ${n} (|diff| ${Math.abs(b - n)})`);
    // f32 against float64: the first step starts from identical state; later steps compound the optimizer's rounding.
    const tol = t === 0 ? 1e-5 : 1e-4;
    assert.ok(Math.abs(n - r) <= tol * Math.max(1, Math.abs(r)), `step ${t + 1}: node loss ${n} vs float64 reference ${r}`);
    assert.ok(Math.abs(b - r) <= tol * Math.max(1, Math.abs(r)), `step ${t + 1}: browser loss ${b} vs float64 reference ${r}`);
  }
  // The first step's other outputs and the trained state agree too.
  for (const name of ['logits', 'probs']) {
    assertClose(`browser vs node ${name}`, browser.outputs[0][name], node.outputs[0][name], { rtol: 1e-5, atol: 1e-5 });
    assertClose(`node vs reference ${name}`, node.outputs[0][name], reference.outputs[0][name], { rtol: 1e-4, atol: 1e-5 });
  }
  assert.equal(Object.keys(browser.state).sort(), Object.keys(node.state).sort());
  for (const name of Object.keys(node.state)) assertClose(`browser vs node state ${name}`, browser.state[name], node.state[name], { rtol: 1e-4, atol: 1e-5 });
});

test.run();
