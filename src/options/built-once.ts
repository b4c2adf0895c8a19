// Values that cost to build (zod schemas above all): built when first asked for, then kept.

/** A value built on first call and kept (a zod schema: building one costs, so only when asked). */
export function builtOnce<T>(build: () => T): () => T {
  let value: T | undefined;
  let built = false;
  return () => {
    if (!built) {
      value = build();
      built = true;
    }
    return value as T;
  };
}
