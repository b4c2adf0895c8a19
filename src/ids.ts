// QEMU's rule for user-given identifiers (id_wellformed): drive ids, throttle group names,
// export and object ids. One rule, so every face refuses the same names with the same words.

/** A well-formed identifier: a letter, then letters, digits, `-`, `.` or `_`. */
export const ID_PATTERN = /^[A-Za-z][A-Za-z0-9._-]*$/;

/** What a well-formed identifier is, for error messages. */
export const ID_RULE = "must start with a letter and use only letters, digits, '-', '.', '_'";

/** True if `id` follows QEMU's identifier rule. */
export function isWellFormedId(id: string): boolean {
  return ID_PATTERN.test(id);
}
