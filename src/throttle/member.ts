/** Placeholder replaced by the throttling implementation. */
export interface ThrottleMember {
  admit(direction: 0 | 1, bytes: number, signal?: AbortSignal): Promise<void> | undefined;
  drain(): void;
  stats(): Record<string, number>;
}
