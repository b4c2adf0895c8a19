import { createRequire } from 'node:module';
import { describe, expect, it } from 'vitest';
import { loadKoffi } from '../../src/platform/koffi-load.js';

const require = createRequire(import.meta.url);

describe('loadKoffi', () => {
  it("gives koffi's own binary, of koffi's version, once per process", () => {
    const k = loadKoffi();
    expect(k.version).toBe((require('koffi') as typeof import('koffi')).version);
    expect(loadKoffi()).toBe(k);
  });

  // the direct path is taken on glibc Linux (x64, arm64), where koffi ships the binary beside itself
  it.runIf(process.platform === 'linux' && ['x64', 'arm64'].includes(process.arch))('is the very binary koffi loads itself, found without its loader', () => {
    const k = loadKoffi();
    const viaPackage = require('koffi') as typeof import('koffi');
    // koffi's loader returns the binary it loaded as `default`: the very object loaded above
    expect((viaPackage as unknown as { default: unknown }).default).toBe(k);
  });

  it('calls into the C library: getpid through the binary equals process.pid', () => {
    const getpid = loadKoffi().load('libc.so.6').func('int getpid()');
    expect(getpid()).toBe(process.pid);
  });
});
