import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';

type Koffi = typeof import('koffi');

/** Architectures koffi ships a prebuilt Linux (glibc) binary for, as its platform packages name them. */
const PREBUILT_LINUX = new Set(['x64', 'arm64']);

let koffi: Koffi | undefined;

/**
 * koffi, for a few C calls. `require('koffi')` spends most of its time before the first call in
 * JavaScript that finds its binary: resolving the package's exports map (which loads Node's ES
 * module resolver), reading the ELF header of the node executable to tell glibc from musl,
 * wrapping deprecated names. On glibc Linux the binary is loaded here as koffi's own loader
 * would (the platform package beside `koffi` in the same node_modules), when it is there and of
 * koffi's version; otherwise — musl, another platform, another layout — through koffi's loader.
 * The calls used here (load, func, errno, address, view) are the binary's own, unwrapped.
 */
export function loadKoffi(): Koffi {
  if (koffi !== undefined) return koffi;
  const require = createRequire(import.meta.url);
  koffi = process.platform === 'linux' && PREBUILT_LINUX.has(process.arch) ? prebuilt(require) : undefined;
  koffi ??= require('koffi') as Koffi;
  return koffi;
}

/** koffi's glibc binary from the node_modules that holds koffi, or undefined where it is not to be had. */
function prebuilt(require: NodeJS.Require): Koffi | undefined {
  for (const dir of require.resolve.paths('koffi') ?? []) {
    const manifest = `${dir}/koffi/package.json`;
    if (!existsSync(manifest)) continue;
    try {
      const { version } = JSON.parse(readFileSync(manifest, 'utf8')) as { version?: unknown };
      const binary = `${dir}/@koromix/koffi-linux-${process.arch}/linux_${process.arch}/koffi.node`;
      if (!existsSync(binary)) return undefined;
      const native = require(binary) as Koffi;
      // the binary koffi's loader would refuse (another version) is not ours to use either
      return native.version === version ? native : undefined;
    } catch {
      // not loadable here (a musl system): koffi's loader knows better
      return undefined;
    }
  }
  return undefined;
}
