// The MODEL argument of lovt-run on Node: a .lovt source, compiled on demand by the
// front end, or a directory written by `lovtc MODEL -o DIR` (compiler/artifact.ts),
// compiled already. Anything else (a missing path, /dev/null, a directory that is not
// an artifact) is one error saying what it is.

import { statSync } from 'node:fs';
import nodePath from 'node:path';
import { ARTIFACT_GRAPH, readArtifact, recompileCommand } from '../../compiler/artifact.ts';
import { CompileFailed, compileModel } from '../../compiler/frontend/index.ts';
import { fileKind } from '../../compiler/frontend/file-kind.ts';
import type { ModelSource } from '../train/run-setup.ts';
import { setKeepsValue } from '../train/run-setup.ts';
import type { CompiledModel } from '../train/trainer.ts';

export interface OpenModelOptions {
  /** --model NAME: which model of a source file; for an artifact, the name it must have. */
  model?: string;
  /** The command needs the eval-mode graph too (train validates with it). */
  needsEval?: boolean;
}

export function openModel(modelPath: string, opts: OpenModelOptions = {}): ModelSource {
  let st;
  try {
    st = statSync(modelPath);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new Error(`cannot read the model ${modelPath}: ${code === 'ENOENT' ? 'no such file or directory' : code}`);
  }
  if (st.isDirectory()) return artifactSource(modelPath, modelPath, opts);
  if (!st.isFile()) throw new Error(`the model ${modelPath} is ${fileKind(st)}, not a .lovt file or a lovtc artifact directory`);
  if (nodePath.basename(modelPath) === ARTIFACT_GRAPH) return artifactSource(modelPath, nodePath.dirname(modelPath), opts);
  return lovtSource(modelPath, opts);
}

function lovtSource(modelPath: string, opts: OpenModelOptions): ModelSource {
  const cache = new Map<string, CompiledModel>();
  return {
    path: modelPath,
    compile(set, mode) {
      const key = JSON.stringify([set, mode]);
      let compiled = cache.get(key);
      if (!compiled) {
        const r = compileModel({ path: modelPath }, { model: opts.model, set, mode });
        if (!r.ok || !r.graph || !r.model) throw new CompileFailed(r.diagnostics);
        compiled = { graph: r.graph, model: r.model };
        cache.set(key, compiled);
      }
      return compiled;
    },
  };
}

function artifactSource(shown: string, dir: string, opts: OpenModelOptions): ModelSource {
  const { artifact, sha256, file } = readArtifact(dir);
  const recompile = (set: Record<string, string> = {}) => recompileCommand(artifact, dir, set, 'train');
  if (artifact.model.mode !== 'train') {
    throw new Error(
      `${file} was compiled with --mode ${artifact.model.mode}; lovt-run train and loss need a train-mode artifact: recompile with \`${recompile()}\``,
    );
  }
  if (opts.needsEval && !artifact.eval) {
    throw new Error(`${file} has no eval-mode graph (an older lovtc wrote it), which training validates with: recompile with \`${recompile()}\``);
  }
  if (opts.model && opts.model !== artifact.model.name) {
    throw new Error(`${shown} holds the model ${artifact.model.name}, not ${opts.model} (--model): compile ${opts.model} with lovtc --model ${opts.model}`);
  }
  return {
    path: shown,
    artifact: { sha256, set: artifact.options?.set ?? {}, recompile },
    compile(set, mode) {
      const changed = Object.entries(set).filter(([k, v]) => !setKeepsValue(artifact.model, k, v));
      if (changed.length) {
        const sets = changed.map(([k, v]) => `--set ${k}=${v}`).join(' ');
        throw new Error(`${shown} is compiled already and ${sets} would change it: recompile with \`${recompile(Object.fromEntries(changed))}\``);
      }
      if (mode === 'train') return { graph: artifact.graph, model: artifact.model };
      if (!artifact.eval) throw new Error(`${file} has no eval-mode graph: recompile with \`${recompile()}\``);
      return artifact.eval;
    },
  };
}
