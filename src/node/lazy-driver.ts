// A built-in driver whose code loads on first use: start-up (the CLI's, a bundle's) pays only
// for the drivers it opens. The stub is a whole BlockDriver: what is asked before any open
// (name, capabilities, child roles, probe, the option schemas) comes from small modules, the
// rest from the driver's module, imported once.
import type { z } from 'zod';
import { BlockError } from '../errors.js';
import type { BlockDriver, DriverCapabilities, FormatCreator } from './driver.js';
import type { BlockNode } from './node.js';

export { builtOnce } from '../options/built-once.js';

/** What a stub knows without its driver's module; each member must equal the loaded driver's. */
export interface LazyDriverSpec<S extends z.ZodType> {
  readonly name: string;
  readonly capabilities: DriverCapabilities;
  readonly children?: Readonly<Record<string, 'required' | 'optional'>>;
  readonly probe?: (head: Uint8Array, filename?: string) => number;
  /** The options schema (the instance the driver itself uses). */
  readonly schema: () => S;
  /** The creation options schema, for a driver that creates images. */
  readonly createSchema?: () => z.ZodType<Record<string, unknown>>;
  /** The driver checks images (has `check`). */
  readonly checks?: boolean;
  /** Imports the driver's module. */
  readonly load: () => Promise<BlockDriver<S>>;
}

/** A driver that imports its module on its first open, create or check. */
export function lazyDriver<S extends z.ZodType>(spec: LazyDriverSpec<S>): BlockDriver<S> {
  let loading: Promise<BlockDriver<S>> | undefined;
  const load = (): Promise<BlockDriver<S>> => {
    // a failed import (a missing chunk) is tried again next time, not remembered
    loading ??= spec.load().catch((e: unknown) => {
      loading = undefined;
      throw e;
    });
    return loading;
  };
  const driver = {
    name: spec.name,
    capabilities: spec.capabilities,
    // getters, not values: a schema is built when someone asks for it
    get schema(): S {
      return spec.schema();
    },
    open: async (ctx) => (await load()).open(ctx),
  } as { -readonly [K in keyof BlockDriver<S>]: BlockDriver<S>[K] };
  if (spec.children !== undefined) driver.children = spec.children;
  if (spec.probe !== undefined) driver.probe = spec.probe;
  const createSchema = spec.createSchema;
  if (createSchema !== undefined) {
    const creator: FormatCreator<BlockNode> = {
      get schema() {
        return createSchema();
      },
      create: async (file, size, options, backing, siblings) => {
        const loaded = await load();
        if (loaded.create === undefined) throw new BlockError('ENOTSUP', `driver '${spec.name}' creates no images`, { field: 'driver' });
        return loaded.create.create(file, size, options, backing, siblings);
      },
    };
    driver.create = creator;
  }
  if (spec.checks) {
    driver.check = async (file, options) => {
      const loaded = await load();
      if (loaded.check === undefined) throw new BlockError('ENOTSUP', `driver '${spec.name}' checks no images`, { field: 'driver' });
      return loaded.check(file, options);
    };
  }
  return driver;
}
