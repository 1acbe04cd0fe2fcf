// lovtc: the .lovt compiler command (compiler/frontend/cli.ts). Run it as
// `npx lovtc` or `node bin/lovtc.js` (which loads this file through tsx).

import { runLovtc } from '../compiler/frontend/cli.ts';

// `lovtc --params | head` closes the pipe early: stop quietly instead of throwing.
for (const stream of [process.stdout, process.stderr])
  stream.on('error', (e: NodeJS.ErrnoException) => {
    if (e.code === 'EPIPE') process.exit(process.exitCode ?? 0);
    throw e;
  });

process.exitCode = await runLovtc(process.argv.slice(2));
