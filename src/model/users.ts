// The domain's users: the single-user mode's local user, and users an OpenID provider vouches
// for, known by (issuer, subject). A leaf module like tasks.ts: it imports nothing.

/** The single-user mode's one user: a fixed id, so data survives restarts and mode switches. */
export const LOCAL_USER_ID = "00000000-0000-7000-8000-000000000001";

export interface User {
  id: string;
  issuer: string;
  subject: string;
  email: string | null;
  name: string | null;
  createdAt: Date;
}
