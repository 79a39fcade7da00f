// Logins (refresh-token families) recently seen live, so that checking an access token does not
// cost a database round trip on every call. A revocation on this replica forgets the login at
// once; one on another replica is seen here within LIVE_FOR_MS.
export const LIVE_FOR_MS = 1000;
const MAX_ENTRIES = 10_000;

export class LiveLogins {
  private readonly until = new Map<string, number>();

  isLive(familyId: string, nowMs: number): boolean {
    const until = this.until.get(familyId);
    if (until === undefined) return false;
    if (until > nowMs) return true;
    this.until.delete(familyId);
    return false;
  }

  remember(familyId: string, nowMs: number): void {
    this.until.delete(familyId);
    if (this.until.size >= MAX_ENTRIES) this.until.delete(this.until.keys().next().value!);
    this.until.set(familyId, nowMs + LIVE_FOR_MS);
  }

  forget(familyId: string): void {
    this.until.delete(familyId);
  }

  forgetAll(): void {
    this.until.clear();
  }
}
