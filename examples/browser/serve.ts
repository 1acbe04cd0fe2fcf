// Builds the browser example into examples/browser/out/ and serves it on
// localhost (browsers expose WebGPU only to secure contexts, and
// http://127.0.0.1 is one):
//
//   node --import tsx examples/browser/serve.ts [--port 8080] [--epochs 10] [--build-only]
//
// out/ receives: lovt-browser.js (the runtime bundle), main.js (the page
// script, importing ./lovt-browser.js), training.json (the tiny model's step
// and apply graphs; the page plans their kernels for its device) and
// batches.safetensors.

import http from 'node:http';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { bundleApp, bundleRuntime } from '../../scripts/bundle-browser.ts';
import { buildTinyContrastive, tinyBatch, TINY_CONFIG } from './tiny-model.ts';
import { compileTraining, encodeBatches } from './train-loop.ts';

const here = path.dirname(fileURLToPath(import.meta.url));
const outDir = path.join(here, 'out');

function option(argv: string[], flag: string, fallback: number): number {
  const i = argv.indexOf(flag);
  if (i < 0) return fallback;
  const v = Number(argv[i + 1]);
  if (!Number.isInteger(v) || v < 0) throw new Error(`${flag} needs a whole number, got '${argv[i + 1] ?? ''}'`);
  return v;
}

async function build(epochs: number): Promise<void> {
  await mkdir(outDir, { recursive: true });
  await bundleRuntime({ outfile: path.join(outDir, 'lovt-browser.js') });
  await bundleApp(path.join(here, 'main.ts'), { outfile: path.join(outDir, 'main.js'), runtimeUrl: './lovt-browser.js' });
  const compiled = compileTraining(buildTinyContrastive(TINY_CONFIG), 'loss', { kind: 'adam' });
  await writeFile(path.join(outDir, 'training.json'), JSON.stringify({ compiled, seed: 0, lr: 0.01, epochs }));
  const batches = Array.from({ length: 4 }, (_, i) => tinyBatch(TINY_CONFIG, 100 + i, i));
  await writeFile(path.join(outDir, 'batches.safetensors'), encodeBatches(compiled.step, batches));
  console.log(`built ${path.relative(process.cwd(), outDir)}/`);
}

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.json': 'application/json',
  '.safetensors': 'application/octet-stream',
};

function serve(port: number): void {
  const server = http.createServer(async (req, res) => {
    const name = new URL(req.url ?? '/', 'http://127.0.0.1').pathname.replace(/^\/+/, '') || 'index.html';
    // Only these files, from these two folders: never anything else on disk.
    const file = name === 'index.html' ? path.join(here, 'index.html') : /^[\w.-]+$/.test(name) ? path.join(outDir, name) : undefined;
    const body = file && (await readFile(file).catch(() => undefined));
    if (!body) {
      res.writeHead(404, { 'content-type': 'text/plain' }).end(`not found: ${name}`);
      return;
    }
    res.writeHead(200, { 'content-type': TYPES[path.extname(name)] ?? 'application/octet-stream', 'cache-control': 'no-store' }).end(body);
  });
  server.on('error', (e) => {
    console.error(`serve: ${e.message}`);
    process.exit(1);
  });
  server.listen(port, '127.0.0.1', () => console.log(`open http://127.0.0.1:${port}/ in a browser with WebGPU (Ctrl-C stops)`));
}

const argv = process.argv.slice(2);
try {
  await build(option(argv, '--epochs', 10));
  if (!argv.includes('--build-only')) serve(option(argv, '--port', 8080));
} catch (e) {
  console.error(`serve: ${(e as Error).message}`);
  process.exit(1);
}
