// lovt-run: train, evaluate losses, export and inspect .lovt models on WebGPU.
//
//   lovt-run train MODEL [--data synth|mimic:DIR] [--steps N | --epochs E] ...
//   lovt-run loss MODEL --weights W.safetensors --batch X.safetensors [--grads G.safetensors]
//   lovt-run synth --out DIR --studies N --seed S
//   lovt-run export RUN_DIR --image-encoder out.safetensors
//   lovt-run eval --init RUN_DIR|FILE.safetensors|random --task NAME | --suite NAME [--data synth|DIR] ...
//   lovt-run doctor
//   lovt-run demo [--out RUN_DIR] [--minutes M] [--seeds N]
//
// MODEL is a .lovt file or a directory written by `lovtc MODEL -o DIR`. This file is
// the command-line wiring and the printing; the commands themselves are in
// runtime/platform/node-train.ts (and runtime/train/run-setup.ts). Every failure is
// one line on stderr (or a rendered compiler diagnostic) and exit code 1; the
// process always exits explicitly because Dawn's GPU instance would otherwise keep
// it alive. docs/training.md describes the commands in full.

import { Command, InvalidArgumentError, Option } from 'commander';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { TrainOptions } from '../runtime/platform/node-train.ts';
import type { EvalOptions } from '../runtime/platform/node-eval.ts';
import { progressBar, runOutput, say } from './run-output.ts';

/** The commands, loaded when one runs: the compiler alone takes seconds to load, `--help` and usage errors should not wait. */
const commands = () => import('../runtime/platform/node-train.ts');
type Commands = Awaited<ReturnType<typeof commands>>;

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

/** A commander argument parser: `ok(n)` decides, `want` says what is wanted. */
function numberArg(flag: string, want: string, ok: (n: number) => boolean) {
  return (value: string): number => {
    const n = Number(value);
    if (value.trim() === '' || !ok(n)) throw new InvalidArgumentError(`${flag} must be ${want}, got '${value}'`);
    return n;
  };
}
const positiveInt = (flag: string) => numberArg(flag, 'a positive whole number', (n) => Number.isInteger(n) && n > 0);
const nonNegativeInt = (flag: string) => numberArg(flag, 'a whole number >= 0', (n) => Number.isInteger(n) && n >= 0);
const positiveNumber = (flag: string) => numberArg(flag, 'a positive number', (n) => n > 0 && Number.isFinite(n));

async function train(model: string, o: TrainOptions): Promise<void> {
  const c = await commands();
  const out = runOutput(c, o.steps);
  try {
    await c.trainCommand(model, o, out);
  } finally {
    out.stop();
  }
}

const DEMO_MODEL = fileURLToPath(new URL('../models/lovt-tiny.lovt', import.meta.url));

/** `--studies N`: the size of a generated SynthCXR (train --data synth, synth, demo). */
const studiesOption = (description: string) => new Option('--studies <N>', description).argParser(positiveInt('--studies')).default(200);

/** `--data-workers N`: threads that decode and augment images (train, demo). */
const dataWorkersOption = () =>
  new Option(
    '--data-workers <N>',
    'threads decoding, resizing and augmenting images, at most the cores; 0: the main thread (default: cores - 1, at least 1)',
  ).argParser(nonNegativeInt('--data-workers'));

/** `--overwrite` (train, demo). */
const overwriteOption = () => new Option('--overwrite', 'with --out of an existing run: move that run to RUN_DIR.old-<time> (never deleted) and start anew');

const MODEL_ARG = '.lovt model file, or a directory written by `lovtc MODEL -o DIR`';

function buildProgram(): Command {
  const program = new Command('lovt-run')
    .description('Train and inspect .lovt vision-language models on WebGPU')
    // Commander's own errors (unknown option, missing argument) as one line too.
    .configureOutput({
      outputError: (str, write) =>
        write(
          `lovt-run: ${str
            .replace(/^error: /, '')
            .trim()
            .replace(/\s*\n\s*/g, ' ')} (see lovt-run --help)\n`,
        ),
    });

  program
    .command('train')
    .description('train a model (default data: a generated SynthCXR data set)')
    .argument('<MODEL>', MODEL_ARG)
    .option('--model <NAME>', 'which model of the file (default: its only model)')
    .option('--data <SPEC>', "'synth' (generated, cached) or 'mimic:DIR' (MIMIC-CXR-JPG layout)")
    .addOption(studiesOption('SynthCXR size for --data synth'))
    .option('--synth-seed <S>', 'SynthCXR generator seed for --data synth', nonNegativeInt('--synth-seed'), 0)
    .option('--image-cache <DIR>', 'resized image copies and pixel statistics for --data mimic, reused by later runs (default: a folder in DATA)')
    .option('--resize <PX>', 'longest side of the cached image copies for --data mimic (default 512)', positiveInt('--resize'))
    .option('--stats-sample <N>', 'images sampled for the train-split pixel statistics (default 4000)', positiveInt('--stats-sample'))
    .option('--vocab <FILE>', 'BERT vocabulary (vocab.txt or tokenizer.json); default DATA/vocab.txt')
    .addOption(dataWorkersOption())
    .option('--steps <N>', 'stop after N optimizer steps in total', positiveInt('--steps'))
    .option('--epochs <E>', 'stop after E epochs (default: the train section)', positiveInt('--epochs'))
    .option('--batch <B>', 'batch size (the config batch)', positiveInt('--batch'))
    .option('--accumulate <K>', 'micro-batches per optimizer step (train.accumulate)', positiveInt('--accumulate'))
    .option('--set <key=value>', 'override a config or train key (repeatable)', collect, [])
    .option('--seed <S>', 'run seed (train.seed)', nonNegativeInt('--seed'))
    .option('--out <RUN_DIR>', 'run directory (default runs/<model>-<time>); never one that holds a run')
    .addOption(overwriteOption())
    .option('--checkpoint-every <K>', 'also save the last checkpoint every K optimizer steps', positiveInt('--checkpoint-every'))
    .option('--resume <RUN_DIR>', 'continue a run from its last checkpoint (same model, --set and data)')
    .option('--init <PREFIX=FILE>', 'load pretrained weights under a state prefix, e.g. image_encoder=resnet50.safetensors (repeatable)', collect, [])
    .option('--minutes <M>', 'stop after M minutes of training', positiveNumber('--minutes'))
    .option('--val-batches <N>', 'validate on at most N batches', positiveInt('--val-batches'))
    .option('--no-report', 'skip report.md')
    .option('--heatmap-studies <N>', 'validation studies drawn in the report', nonNegativeInt('--heatmap-studies'), 4)
    .action((model: string, opts: TrainOptions, cmd: Command) => {
      const explicit = new Set(Object.keys(opts).filter((k) => cmd.getOptionValueSource(k) === 'cli'));
      return train(model, { ...opts, explicit, command: ['lovt-run', ...process.argv.slice(2)].join(' ') });
    });

  program
    .command('loss')
    .description('one training-mode forward (BN batch statistics, no dropout): print every loss term as JSON')
    .argument('<MODEL>', MODEL_ARG)
    .option('--model <NAME>', 'which model of the file')
    .option('--weights <FILE>', 'every parameter and buffer, by state name (.safetensors)')
    .option('--batch <FILE>', 'the model inputs by name (.safetensors)')
    .option('--grads <FILE>', 'also write d total / d parameter of every trainable parameter here')
    .option('--set <key=value>', 'override a config (repeatable)', collect, [])
    .action(async (model: string, o: Parameters<Commands['lossCommand']>[1]) => say(JSON.stringify(await (await commands()).lossCommand(model, o))));

  program
    .command('synth')
    .description('write a SynthCXR data set (MIMIC-CXR-JPG layout, with boxes, masks and a vocabulary)')
    .option('--out <DIR>', 'output directory')
    .addOption(studiesOption('number of studies'))
    .option('--seed <S>', 'generator seed', nonNegativeInt('--seed'), 0)
    .option('--image-size <PX>', 'image side in pixels', positiveInt('--image-size'), 256)
    .action(async (o: { out?: string; studies: number; seed: number; imageSize: number }) => {
      if (!o.out) throw new Error('give --out DIR for the data set');
      const { writeSynthDataset } = await import('../runtime/platform/node-fs.ts');
      const bar = progressBar('generating SynthCXR');
      const s = await writeSynthDataset(o.out, { studies: o.studies, seed: o.seed, imageSize: o.imageSize, onProgress: (d, t) => bar.update(d, t) }).finally(
        bar.stop,
      );
      say(
        `wrote ${o.out}: ${s.studies} studies of ${s.subjects} subjects (train ${s.splits.train}, validate ${s.splits.validate}, test ${s.splits.test}), ` +
          `${s.images.frontal} frontal + ${s.images.lateral} lateral images, vocabulary ${s.vocabSize}, ${s.files} files`,
      );
    });

  program
    .command('demo')
    .description(
      'pre-train LoVT-tiny on SynthCXR for a few minutes, then evaluate its encoder against random weights (linear segmentation) and its phrase grounding; one report',
    )
    .option('--out <RUN_DIR>', 'run directory (default runs/demo-<time>)')
    .addOption(overwriteOption())
    .option('--minutes <M>', 'pre-training time', positiveNumber('--minutes'), 3)
    .option('--seeds <N>', 'evaluation runs per encoder at the chosen LR', positiveInt('--seeds'), 3)
    .addOption(studiesOption('SynthCXR size'))
    .addOption(dataWorkersOption())
    .action(async (o: { out?: string; overwrite?: boolean; minutes: number; seeds: number; studies: number; dataWorkers?: number }) => {
      const c = await commands();
      const out = o.out ?? path.join('runs', `demo-${c.timestamp()}`);
      say(
        `lovt demo: pre-training LoVT-tiny on a generated SynthCXR data set for ${o.minutes} min, evaluating its encoder, then ${path.join(out, 'report.md')}`,
      );
      const { demoCommand } = await import('../runtime/platform/node-demo.ts');
      const output = runOutput(c);
      try {
        await demoCommand(DEMO_MODEL, { ...o, out }, output);
      } finally {
        output.stop();
      }
    });

  program
    .command('eval')
    .description('evaluate image encoders on downstream tasks: LR grid, N seeds, mean ± 95% interval (docs/evaluation.md)')
    .option('--init <SOURCE>', "encoder: a pre-training RUN_DIR (best checkpoint), FILE.safetensors (torchvision names) or 'random' (repeatable)", collect, [])
    .option('--task <NAME>', 'task to run (repeatable)', collect, [])
    .option('--suite <NAME>', 'a named list of tasks (synth, synth-linear)')
    .option('--data <SPEC>', "'synth' (generated, cached) or a directory written by `lovt-run synth`", 'synth')
    .addOption(studiesOption('SynthCXR size for --data synth'))
    .option('--synth-seed <S>', 'SynthCXR generator seed for --data synth', nonNegativeInt('--synth-seed'), 0)
    .option('--fraction <P>', 'percent of the training split (1, 10, 100)', positiveNumber('--fraction'), 100)
    .option('--seeds <N>', 'runs at the chosen LR, with seeds 0..N-1', positiveInt('--seeds'), 5)
    .option('--lr <LR>', 'a fixed learning rate for every task (no grid)', positiveNumber('--lr'))
    .option('--max-epochs <E>', "cap every run's epochs (default: the task's)", positiveInt('--max-epochs'))
    .option('--image-size <PX>', "eval image side (default: the encoder's pre-training size, else 128)", positiveInt('--image-size'))
    .option('--out <DIR>', 'output directory (default runs/eval-<time>)')
    .option('--resume <DIR>', 'continue the suite recorded in DIR/runs.jsonl')
    .addOption(dataWorkersOption())
    .action(async (o: EvalOptions) => {
      const { evalCommand } = await import('../runtime/platform/node-eval.ts');
      let bar: ReturnType<typeof progressBar> | null = null;
      let stage = '';
      await evalCommand(o, {
        say: (t) => (bar ? bar.log(t) : say(t)),
        stage: (name, done, total) => {
          if (name !== stage) (bar?.stop(), (bar = progressBar(name, total)), (stage = name));
          bar!.update(done, total);
        },
        stagesDone: () => (bar?.stop(), (bar = null), (stage = '')),
      });
    });

  program
    .command('doctor')
    .description('show the WebGPU adapter, its features and limits (or how to get one)')
    .action(async () => (await (await import('../runtime/platform/node.ts')).doctorReport()).forEach((line) => say(line)));

  program
    .command('export')
    .description("write the image encoder of a run's best (else last) checkpoint under torchvision names")
    .argument('<RUN_DIR>', 'run directory written by `lovt-run train`')
    .option('--image-encoder <FILE>', 'output .safetensors for the image encoder')
    .addOption(new Option('--checkpoint <TAG>', 'which checkpoint').choices(['best', 'last']))
    .option('--prefix <NAME>', 'state prefix of the image encoder in the model', 'image_encoder')
    .action(async (runDir: string, o: Parameters<Commands['exportCommand']>[1]) => say(await (await commands()).exportCommand(runDir, o)));

  // Phrase grounding of a LoVT run (runtime/platform/node-grounding.ts; docs/evaluation.md).
  program
    .command('grounding')
    .description("phrase grounding of a LoVT run on SynthCXR's test split: pointing game (with its chance level) and CNR of attention_r2i")
    .argument('<RUN_DIR>', 'run directory written by `lovt-run train` (a LoVT model)')
    .option('--data <SPEC>', "'synth' (the run's generated SynthCXR), a SynthCXR directory, or mimic:DIR (default: the run's data)")
    .addOption(new Option('--checkpoint <TAG>', 'which checkpoint (default: best, else last)').choices(['best', 'last']))
    .addOption(
      new Option('--region <RULE>', 'a region is inside a mask when the mask holds its centre pixel, or overlaps it')
        .choices(['centre', 'overlap'])
        .default('centre'),
    )
    .option('--json <FILE>', 'also write the result, with every scored sentence, as JSON')
    .addOption(dataWorkersOption())
    .action(async (runDir: string, o: import('../runtime/platform/node-grounding.ts').GroundingOptions) => {
      const { groundingCommand } = await import('../runtime/platform/node-grounding.ts');
      const { groundingNotes, groundingSummaryLine, groundingText } = await import('../runtime/eval/grounding-run.ts');
      const out = runOutput(await commands());
      const started = performance.now();
      try {
        const r = await groundingCommand(runDir, o, out);
        for (const line of groundingText(r)) say(line);
        say(`${groundingSummaryLine(r)} (${((performance.now() - started) / 1000).toFixed(0)} s)`);
        for (const note of groundingNotes(r)) say(note);
        if (o.json) say(`wrote ${o.json}`);
      } finally {
        out.stop();
      }
    });

  return program;
}

async function main(): Promise<number> {
  try {
    await buildProgram().parseAsync(process.argv);
    return Number(process.exitCode ?? 0);
  } catch (err) {
    // A compile error (CompileFailed) is the rendered diagnostic (location, source line, caret) as it is.
    const diagnostics = err instanceof Error && 'diagnostics' in err ? (err.diagnostics as import('../compiler/frontend/index.ts').Diagnostic[]) : null;
    if (diagnostics) process.stderr.write((await import('../compiler/frontend/index.ts')).renderDiagnostics(diagnostics, 'lovt-run') + '\n');
    else process.stderr.write(`lovt-run: ${err instanceof Error ? err.message : String(err)}\n`);
    if (process.env.LOVT_DEBUG && err instanceof Error && err.stack) process.stderr.write(err.stack + '\n');
    else if (err instanceof TypeError && !/GPU|adapter/i.test(err.message))
      process.stderr.write('lovt-run: (this looks like a bug in lovt; set LOVT_DEBUG=1 to see where)\n');
    return 1;
  }
}

process.exit(await main());
