#!/usr/bin/env node
import { BlockError } from '../errors.js';
import { InterruptedError } from '../atomic-output.js';
import { benchCommand } from './bench.js';
import { checkCommand } from './check.js';
import { commitCommand } from './commit.js';
import { convertCommand } from './convert.js';
import { createCommand } from './create.js';
import { infoCommand } from './info.js';
import { mapCommand } from './map.js';
import { serveCommand } from './serve.js';
import { FORMATS } from './target.js';

/** The verbs of the `blocklayer` command; each takes its own arguments and returns an exit code. */
const VERBS: Record<string, { run: (args: string[]) => Promise<number>; help: string }> = {
  info: { run: infoCommand, help: '[-f FMT] IMAGE [--json] [--snapshot S] [--backing-chain]   format, size, backing chain, snapshots (like qemu-img info)' },
  map: { run: mapCommand, help: '[-f FMT] IMAGE [--snapshot S]                     allocation map (like qemu-img map --output=json)' },
  bench: { run: benchCommand, help: '[--rw R] [--bs N] [--iodepth N] [--runtime S] [--drives N] [--iops N …] [--json] [--plot F.svg]   fio-like benchmark' },
  serve: {
    run: serveCommand,
    help: "IMAGE -x NAME [-f FMT] [-r] [-p PORT] [-b ADDR] [-k SOCKET] [-e N] [--iops N …] [--drive 'file=…,id=…,iops=…,group=…' …] [--qmp unix:PATH] [--tls-creds DIR [--tls-verify-peer] | --tls-psk DIR|FILE] [--memory-budget SIZE] [--aio threads|io_uring]   NBD server",
  },
  check: { run: checkCommand, help: '[-f FMT] IMAGE [-r leaks|all | --repair leaks|all] [--json]   metadata consistency check (like qemu-img check; exit 0 clean, 1 failed, 2 corrupt, 3 leaks, 63 unsupported)' },
  commit: { run: commitCommand, help: '[-d] [-p] [-q] OVERLAY                           merge a qcow2 overlay into its backing file, then empty it (like qemu-img commit)' },
  create: { run: createCommand, help: '-f FMT [-b BACKING -F FMT] [-o k=v,…] [-q] FILE [SIZE]   make an image (like qemu-img create)' },
  convert: {
    run: convertCommand,
    help: '[-f FMT] [-O raw|qcow2] [-c] [-o k=v,…] IMAGE OUTPUT [--snapshot S] [-p] [-q]   the guest view as a sparse raw file or a new (compressed) qcow2 image, written atomically (like qemu-img convert)',
  },
};

/** How `-f/--format FMT` reads in the usage text. */
const FORMAT_HELP = `-f, --format FMT: image format (${FORMATS.join(', ')}); given, it is used without probing`;

export async function main(argv: string[]): Promise<number> {
  const [verb, ...rest] = argv;
  const entry = verb ? VERBS[verb] : undefined;
  if (!entry) {
    const usage = Object.entries(VERBS).map(([v, e]) => `  blocklayer ${v} ${e.help}`);
    console.error(`${verb && verb !== '--help' ? `unknown command '${verb}'\n` : ''}usage:\n${usage.join('\n')}\n\n  ${FORMAT_HELP}`);
    return verb === '--help' ? 0 : 1;
  }
  try {
    return await entry.run(rest);
  } catch (e) {
    // Stopped by a signal after cleaning up: say what was removed, exit as the shell expects (130, 143).
    if (e instanceof InterruptedError) {
      console.error(`blocklayer ${verb}: ${e.message}`);
      return e.exitCode;
    }
    // One clear line, no stack: the message names the field, file or offset.
    const msg = e instanceof BlockError ? `${e.code}: ${e.message}` : (e as Error).message;
    console.error(`blocklayer ${verb}: ${msg}`);
    return 1;
  }
}

process.exitCode = await main(process.argv.slice(2));
