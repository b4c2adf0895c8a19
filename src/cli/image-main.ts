import { IMAGE_VERBS } from './image-verbs.js';
import { runVerb } from './run-verb.js';

/**
 * The `blocklayer` command's entry for its image verbs (info, map, check, …): what the installed
 * command runs when the first argument is one of them (scripts/cli-launcher.ts), a smaller script
 * than the whole command's (src/cli/main.ts), so that the verbs scripts call most start sooner.
 * Everything else (help, --version, the other verbs) is main.ts's.
 */
export async function imageMain(argv: string[]): Promise<number> {
  const [verb = '', ...rest] = argv;
  const entry = Object.hasOwn(IMAGE_VERBS, verb) ? IMAGE_VERBS[verb as keyof typeof IMAGE_VERBS] : undefined;
  if (entry === undefined) {
    console.error(`blocklayer: '${verb}' is not an image verb (${Object.keys(IMAGE_VERBS).join(', ')}); run the blocklayer command itself`);
    return 1;
  }
  return runVerb(verb, entry, rest);
}

imageMain(process.argv.slice(2)).then((code) => {
  process.exitCode = code;
});
