// Logins (refresh-token families) recently seen live, with the user each belongs to, so that
// checking an access token does not cost a database round trip on every call. A revocation on
// this replica forgets the login at once; one on another replica is seen here within LIVE_FOR_MS.
export const LIVE_FOR_MS = 1000;
const MAX_ENTRIES = 10_000;

export class LiveLogins {
  private readonly until = new Map<string, { userId: string; untilMs: number }>();

  /** The user the login belongs to while it is remembered as live, else undefined. */
  liveUser(familyId: string, nowMs: number): string | undefined {
    const entry = this.until.get(familyId);
    if (entry === undefined) return undefined;
    if (entry.untilMs > nowMs) return entry.userId;
    this.until.delete(familyId);
    return undefined;
  }

  remember(familyId: string, userId: string, nowMs: number): void {
    this.until.delete(familyId);
    if (this.until.size >= MAX_ENTRIES) this.until.delete(this.until.keys().next().value!);
    this.until.set(familyId, { userId, untilMs: nowMs + LIVE_FOR_MS });
  }

  forget(familyId: string): void {
    this.until.delete(familyId);
  }

  forgetAll(): void {
    this.until.clear();
  }
}
