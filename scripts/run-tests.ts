import { readdirSync, existsSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL, fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const ALL_GROUPS = ['nodevice', 'gpu', 'browser'];
const args = process.argv.slice(2);
const groups = args.filter((a) => ALL_GROUPS.includes(a));
const patterns = args.filter((a) => !ALL_GROUPS.includes(a));
const selected = groups.length ? groups : ALL_GROUPS;

const files: string[] = [];
for (const g of selected) {
  const dir = path.join(root, 'test', g);
  if (!existsSync(dir)) continue;
  for (const f of readdirSync(dir).sort()) {
    if (!f.endsWith('.test.ts')) continue;
    if (patterns.length && !patterns.some((p) => f.includes(p))) continue;
    files.push(path.join(dir, f));
  }
}

// Count uvu's summary lines to print the plain closing line CI reads.
let total = 0, passed = 0, skipped = 0;
const write = process.stdout.write.bind(process.stdout);
process.stdout.write = ((chunk: any, ...rest: any[]) => {
  const s = String(chunk).replace(/\x1b\[[0-9;]*m/g, '');
  const t = /Total:\s+(\d+)/.exec(s); if (t) total = +t[1];
  const p = /Passed:\s+(\d+)/.exec(s); if (p) passed = +p[1];
  const k = /Skipped:\s+(\d+)/.exec(s); if (k) skipped = +k[1];
  return write(chunk, ...rest);
}) as typeof process.stdout.write;

(globalThis as any).UVU_DEFER = 1;
const uvu = await import('uvu');
(globalThis as any).UVU_QUEUE = (globalThis as any).UVU_QUEUE || [];
let idx = 0;
for (const file of files) {
  (globalThis as any).UVU_INDEX = idx++;
  (globalThis as any).UVU_QUEUE.push([path.relative(root, file)]);
  await import(pathToFileURL(file).href);
}
await uvu.exec(false);
const failed = total - passed - skipped;
const code = Number(process.exitCode ?? 0) || (failed > 0 ? 1 : 0);
write(`${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}\n`);
process.exit(code);
