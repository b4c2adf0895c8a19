/**
 * Keeps the docs honest: every TypeScript code block of README.md and docs/*.md is type-checked
 * against the source, as a user's file importing 'blocklayer' would be (tsconfig.json maps the
 * package name to src/). A snippet with an undefined name or an option that does not exist fails.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';

const root = fileURLToPath(new URL('../../', import.meta.url));

/** The ```ts blocks of a Markdown file, with the line each starts on (indented blocks in lists too). */
function tsBlocks(markdown: string): { line: number; code: string }[] {
  const blocks: { line: number; code: string }[] = [];
  const fence = /^( *)```(?:ts|typescript)\n([\s\S]*?)^\1```/gm;
  for (const m of markdown.matchAll(fence)) {
    const indent = m[1].length;
    const code = m[2]
      .split('\n')
      .map((l) => l.slice(Math.min(indent, l.length - l.trimStart().length)))
      .join('\n');
    blocks.push({ line: markdown.slice(0, m.index).split('\n').length, code });
  }
  return blocks;
}

const pages = ['README.md', ...readdirSync(join(root, 'docs'), { withFileTypes: true }).filter((e) => e.isFile() && e.name.endsWith('.md')).map((e) => `docs/${e.name}`)];

/** Snippet files by the (virtual) path they are checked at: beside the tests, so 'blocklayer' and node_modules resolve as for the tests. */
const snippets = new Map<string, { page: string; line: number; code: string }>();
for (const page of pages) {
  for (const block of tsBlocks(readFileSync(join(root, page), 'utf8'))) {
    const path = join(root, 'tests', 'readme-snippets', `${page.replace(/[/.]/g, '_')}_line${block.line}.ts`);
    // `export {}` makes every snippet a module, so top-level await is allowed as in the user's ESM file.
    snippets.set(path, { page, line: block.line, code: `${block.code}\nexport {};\n` });
  }
}

function typeErrors(): Map<string, string[]> {
  const config = ts.readConfigFile(join(root, 'tsconfig.json'), ts.sys.readFile);
  const { options, fileNames } = ts.parseJsonConfigFileContent(config.config, ts.sys, root);
  const host = ts.createCompilerHost({ ...options, noEmit: true });
  const { getSourceFile, fileExists, readFile } = host;
  host.fileExists = (f) => snippets.has(f) || fileExists.call(host, f);
  host.readFile = (f) => snippets.get(f)?.code ?? readFile.call(host, f);
  host.getSourceFile = (f, language, ...rest) => {
    const snippet = snippets.get(f);
    return snippet ? ts.createSourceFile(f, snippet.code, language) : getSourceFile.call(host, f, language, ...rest);
  };
  // The project's ambient declarations (types of untyped packages such as ext2fs) as tsc sees them.
  const declarations = fileNames.filter((f) => f.endsWith('.d.ts'));
  const program = ts.createProgram([...snippets.keys(), ...declarations], { ...options, noEmit: true }, host);
  const errors = new Map<string, string[]>();
  for (const path of snippets.keys()) {
    const file = program.getSourceFile(path);
    if (!file) throw new Error(`${path} was not loaded`);
    const diagnostics = [...program.getSyntacticDiagnostics(file), ...program.getSemanticDiagnostics(file)];
    errors.set(
      path,
      diagnostics.map((d) => {
        const at = d.start === undefined ? '' : `line ${file.getLineAndCharacterOfPosition(d.start).line + 1}: `;
        return at + ts.flattenDiagnosticMessageText(d.messageText, '\n');
      }),
    );
  }
  return errors;
}

/** A heading's anchor as GitHub makes it: lower case, punctuation dropped, spaces to hyphens. */
function slug(heading: string): string {
  return heading
    .trim()
    .toLowerCase()
    .replace(/[^\p{L}\p{N}\s_-]/gu, '')
    .replace(/\s/g, '-');
}

/** Relative links of a page that lead nowhere: a missing file, or a missing heading in a Markdown file. */
function brokenLinks(page: string): string[] {
  const text = readFileSync(join(root, page), 'utf8').replace(/^( *)```[\s\S]*?^\1```/gm, '');
  const broken: string[] = [];
  for (const [, target] of text.matchAll(/\]\(([^)\s]+)\)/g)) {
    if (/^[a-z]+:/i.test(target)) continue;
    const [file, anchor] = target.split('#');
    const path = file === '' ? join(root, page) : join(root, dirname(page), file);
    if (!existsSync(path)) {
      broken.push(target);
      continue;
    }
    if (anchor !== undefined && path.endsWith('.md')) {
      const headings = [...readFileSync(path, 'utf8').matchAll(/^#+ (.*)$/gm)].map((m) => slug(m[1]));
      if (!headings.includes(anchor)) broken.push(target);
    }
  }
  return broken;
}

describe('links of README.md and docs/', () => {
  it.each(pages)('%s links only to files and headings that exist', (page) => {
    expect(brokenLinks(page)).toEqual([]);
  });
});

describe('TypeScript snippets of README.md and docs/', () => {
  it('finds the snippets (the quick start among them)', () => {
    expect([...snippets.values()].filter((s) => s.page === 'README.md').length).toBeGreaterThan(0);
    expect([...snippets.values()].some((s) => s.code.includes("from 'blocklayer'"))).toBe(true);
  });

  it('type-check against the source as written', () => {
    const errors = typeErrors();
    const failures = [...errors].filter(([, e]) => e.length > 0).map(([path, e]) => `${snippets.get(path)?.page}, block at line ${snippets.get(path)?.line}:\n  ${e.join('\n  ')}`);
    expect(failures).toEqual([]);
  }, 120_000);
});
