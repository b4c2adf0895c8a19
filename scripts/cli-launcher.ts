/**
 * The `blocklayer` command as installed (dist/cli/blocklayer.js, built by scripts/build-cli.ts):
 * runs the CLI, one script beside this file (the image verbs' own, or the whole command's),
 * through a V8 code cache. Most of a start without
 * it is V8 reading and compiling the code; with it, the compiled code of the functions the last
 * run of the same verb used is read back instead (what Node 22's module.enableCompileCache does
 * for modules; Node 20 has no such thing, and a code cache needs a script, not a module).
 *
 * The cache lives in `$TMPDIR/blocklayer-compile-cache-<uid>` (a directory only its owner may
 * write: compiled code runs as ours), or in the directory `BLOCKLAYER_COMPILE_CACHE` names;
 * `BLOCKLAYER_COMPILE_CACHE=off` (or 0) runs without one. One file per build, verb, Node
 * version and architecture; V8 checks the rest (its version, its flags) and refuses a cache that
 * does not fit, then the code compiles as without one and the cache is written again at exit.
 */
import fs from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import vm from 'node:vm';

/** The CLI script's file name, beside this one (set by the build). */
declare const __BLOCKLAYER_SCRIPT__: string;
/** The script of the image verbs alone (info, map, check…), beside this one (set by the build). */
declare const __BLOCKLAYER_IMAGE_SCRIPT__: string;
/** The verbs the image script runs (set by the build, from src/cli/image-verbs.ts). */
declare const __BLOCKLAYER_IMAGE_VERBS__: readonly string[];
/** A hash of the CLI scripts' text (set by the build): a cache of one build never meets another's code. */
declare const __BLOCKLAYER_BUILD__: string;
/** This file's directory (`__dirname` in the CommonJS launcher, `import.meta.dirname` in the ES module one). */
declare const __BLOCKLAYER_DIR__: string;

/** Caches of other builds left alone this long may go (another installed version may still use its own). */
const STALE_MS = 7 * 24 * 3600 * 1000;

/** The cache directory, made if missing; undefined when off or when others could write into it. */
function cacheDirectory(): string | undefined {
  const setting = process.env.BLOCKLAYER_COMPILE_CACHE;
  if (setting === 'off' || setting === '0') return undefined;
  const uid = process.getuid?.();
  const dir = setting || path.join(os.tmpdir(), `blocklayer-compile-cache-${uid ?? 'user'}`);
  try {
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    const st = fs.statSync(dir);
    if (uid !== undefined && (st.uid !== uid || (st.mode & 0o022) !== 0)) return undefined;
    return dir;
  } catch {
    return undefined;
  }
}

/** The verb as part of a file name: each verb's run compiles its own functions. */
function verbKey(verb: string | undefined): string {
  return verb !== undefined && /^[a-z]{1,16}$/.test(verb) ? verb : 'other';
}

/** Writes the code compiled so far (at exit: the functions this run used) and drops other builds' stale caches. */
function writeCache(script: vm.Script, dir: string, file: string): void {
  try {
    const partial = `${file}.${process.pid}`;
    fs.writeFileSync(partial, script.createCachedData(), { mode: 0o600 });
    fs.renameSync(partial, file);
    const now = Date.now();
    for (const name of fs.readdirSync(dir)) {
      if (name.startsWith(__BLOCKLAYER_BUILD__)) continue;
      const other = path.join(dir, name);
      if (now - fs.statSync(other).mtimeMs > STALE_MS) fs.rmSync(other, { force: true });
    }
  } catch {
    // a cache is only ever a shortcut
  }
}

const verb = process.argv[2];
// an image verb starts from the smaller script that holds only those verbs (its cache is per verb too)
const scriptPath = path.join(__BLOCKLAYER_DIR__, verb !== undefined && __BLOCKLAYER_IMAGE_VERBS__.includes(verb) ? __BLOCKLAYER_IMAGE_SCRIPT__ : __BLOCKLAYER_SCRIPT__);
const dir = cacheDirectory();
const cacheFile = dir && path.join(dir, `${__BLOCKLAYER_BUILD__}-${verbKey(verb)}-${process.version}-${process.arch}.bin`);
let cachedData: Buffer | undefined;
if (cacheFile) {
  try {
    cachedData = fs.readFileSync(cacheFile);
  } catch {
    cachedData = undefined;
  }
}
// latin1, not utf8: the build makes the script ASCII only, where both give the same text, and the
// latin1 read copies it once (fewer pages touched at every start)
const script = new vm.Script(fs.readFileSync(scriptPath, 'latin1'), {
  filename: scriptPath,
  cachedData,
  // the script's import() of packages kept outside the bundle (zstd-napi) resolve as from its file
  importModuleDynamically: vm.constants.USE_MAIN_CONTEXT_DEFAULT_LOADER,
});
if (dir && cacheFile && (cachedData === undefined || script.cachedDataRejected)) process.once('exit', () => writeCache(script, dir, cacheFile));
// the script is a function of the module's `require` and `import.meta.url` (scripts/build-cli.ts)
(script.runInThisContext() as (require: NodeJS.Require, url: string) => void)(createRequire(scriptPath), pathToFileURL(scriptPath).href);
