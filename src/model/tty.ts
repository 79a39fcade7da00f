// TTY input requests: a question an agent asked through its worker, and the answer its user
// gave. A leaf module, like model/tasks.ts: it imports nothing.

export type TtyInputType = "text" | "confirm" | "choice";
export type TtyInputStatus = "pending" | "answered" | "cancelled";

export interface TtyInputRequest {
  id: string;
  ownerId: string;
  sessionId: string;
  /** The unit or composite task the session works for. */
  taskId: string;
  clientRequestId: string;
  prompt: string;
  inputType: TtyInputType;
  /** CHOICE only: what the answer must be one of. */
  options: string[];
  /** As of the read: a pending request whose session has ended reads as cancelled. */
  status: TtyInputStatus;
  /** The answer (CONFIRM: "yes" or "no"); null until answered. */
  response: string | null;
  createdAt: Date;
  answeredAt: Date | null;
}

/**
 * A request's status as of now. Nothing writes "cancelled" when a session ends: a pending
 * request of a session that is no longer active is cancelled, so no session-ending path (a
 * report, a stop, a cancel, a lost lease) has to know about questions.
 */
export function ttyStatus(stored: TtyInputStatus, sessionActive: boolean): TtyInputStatus {
  if (stored === "pending" && !sessionActive) return "cancelled";
  return stored;
}
