// Once per test run: bundles the `blocklayer` command from the current source, as the package
// ships it, for the tests that start it as a process (tests/helpers/cli.ts).
import fs from 'node:fs';
import path from 'node:path';
import { buildCli } from '../scripts/build-cli.js';

const root = path.resolve(import.meta.dirname, '..');

export default async function setup(): Promise<() => void> {
  // two levels below the root, as dist/cli/ is: the command finds ../../package.json from there
  const outdir = path.join(root, '.cache', `test-cli-${process.pid}`);
  const [launcher] = await buildCli(outdir);
  process.env.BLOCKLAYER_TEST_CLI = launcher;
  return () => fs.rmSync(outdir, { recursive: true, force: true });
}
