// Request validation: collect every violation of a request, then throw them together as one
// InvalidArgument with a BadRequest detail naming each field.
import { invalidArgument, type FieldViolation } from "./errors.js";
import { textProblem } from "./text.js";

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

export class Violations {
  private readonly list: FieldViolation[] = [];

  add(field: string, description: string): void {
    this.list.push({ field, description });
  }

  /** Checks an id field: required and a UUID (ids are case-insensitive; callers lower-case them). */
  id(field: string, value: string): void {
    if (value === "") this.add(field, "is required");
    else if (!UUID.test(value)) this.add(field, "must be a UUID");
  }

  /** Checks a text field's length in characters, after trimming by the caller. */
  text(field: string, value: string, opts: { required?: boolean; max: number; singleLine?: boolean }): void {
    if (value === "") {
      if (opts.required) this.add(field, "is required");
      return;
    }
    const length = [...value].length;
    if (length > opts.max) this.add(field, `must be at most ${opts.max} characters, got ${length}`);
    // One shared check of the characters (src/core/text.ts), for names and multi-line text alike.
    const problem = textProblem(value, { singleLine: opts.singleLine ?? false });
    if (problem !== undefined) this.add(field, problem);
  }

  get empty(): boolean {
    return this.list.length === 0;
  }

  /** Throws InvalidArgument if anything was added. */
  throwIfAny(): void {
    if (this.list.length > 0) throw invalidArgument(this.list);
  }
}

export function normalizeId(value: string): string {
  return value.trim().toLowerCase();
}

export function isUuid(value: string): boolean {
  return UUID.test(value);
}
