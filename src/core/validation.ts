// Request validation: collect the violations of a request, then throw them together as one
// InvalidArgument with a BadRequest detail naming the fields. Only the first few are kept and
// the rest counted, so a request with a million bad elements costs no more than one with ten.
import { MAX_REPORTED_VIOLATIONS, invalidArgument, type FieldViolation } from "./errors.js";
import { textProblem } from "./text.js";

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

export class Violations {
  private readonly list: FieldViolation[] = [];
  private count = 0;

  add(field: string, description: string): void {
    this.count++;
    if (this.list.length < MAX_REPORTED_VIOLATIONS) this.list.push({ field, description });
  }

  /** Reads an id field: required and a UUID. Returns it normalized (trimmed, lower-case: ids are case-insensitive). */
  id(field: string, raw: string): string {
    const id = normalizeId(raw);
    if (id === "") this.add(field, "is required");
    else if (!UUID.test(id)) this.add(field, "must be a UUID");
    return id;
  }

  /** Reads an id field that may be empty (undefined then), else as id() does. */
  optionalId(field: string, raw: string): string | undefined {
    return normalizeId(raw) === "" ? undefined : this.id(field, raw);
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
    return this.count === 0;
  }

  /** Throws InvalidArgument if anything was added. */
  throwIfAny(): void {
    if (this.count > 0) throw invalidArgument(this.list, this.count);
  }
}

export function normalizeId(value: string): string {
  return value.trim().toLowerCase();
}

/** A request's one id, normalized; InvalidArgument naming the field when it is missing or not a UUID. */
export function readId(raw: string, field = "id"): string {
  const v = new Violations();
  const id = v.id(field, raw);
  v.throwIfAny();
  return id;
}

export function isUuid(value: string): boolean {
  return UUID.test(value);
}
