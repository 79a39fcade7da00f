// Checks the bounds the contract declares on repeated fields and maps ((foreman.v1.max_items)
// in proto/foreman/v1/options.proto) before a handler reads a request, so that validation,
// storage and error messages only ever see lists of a bounded size. It runs after the auth
// interceptor, so a caller without credentials is refused before its request is looked at
// (the public methods, and RegisterWorker, whose credential is in its body, are checked here
// too). Checking costs a length read per bounded field; messages without lists cost nothing.
import { getOption, hasOption, type DescField, type DescMessage, type Message } from "@bufbuild/protobuf";
import type { Interceptor } from "@connectrpc/connect";
import { max_items } from "../../gen/foreman/v1/options_pb.js";
import { invalidArgument } from "../core/errors.js";

interface Check {
  field: DescField;
  /** Undefined when the field is not bounded itself but holds messages that have bounds. */
  max: number | undefined;
  /** The message type this field holds (directly, in a list or as map values), if it has checks. */
  inner: Plan | undefined;
}

type Plan = Check[];

/** The message type a field holds, directly, as list elements or as map values. */
export function heldMessage(field: DescField): DescMessage | undefined {
  if (field.fieldKind === "message") return field.message;
  if (field.fieldKind === "list" && field.listKind === "message") return field.message;
  if (field.fieldKind === "map" && field.mapKind === "message") return field.message;
  return undefined;
}

const plans = new WeakMap<DescMessage, Plan>();

/** The checks for a message type, or an empty plan when nothing in it is bounded. */
function planFor(desc: DescMessage, visiting = new Set<DescMessage>()): Plan {
  const known = plans.get(desc);
  if (known !== undefined) return known;
  if (visiting.has(desc)) return []; // a recursive type: its bounds are checked where it starts
  visiting.add(desc);
  const plan: Plan = [];
  for (const field of desc.fields) {
    const max = hasOption(field, max_items) ? getOption(field, max_items) : undefined;
    const held = heldMessage(field);
    const inner = held === undefined ? undefined : planFor(held, visiting);
    const innerChecks = inner !== undefined && inner.length > 0 ? inner : undefined;
    if (max !== undefined || innerChecks !== undefined) plan.push({ field, max, inner: innerChecks });
  }
  visiting.delete(desc);
  plans.set(desc, plan);
  return plan;
}

/** The value of a field in a message, following its oneof. */
function valueOf(message: Record<string, unknown>, field: DescField): unknown {
  if (field.oneof === undefined) return message[field.localName];
  const group = message[field.oneof.localName] as { case?: string; value?: unknown } | undefined;
  return group?.case === field.localName ? group.value : undefined;
}

/** The first bound a message breaks, as [field path, bound, size]. */
function firstBreach(message: Record<string, unknown>, plan: Plan, prefix: string): [string, number, number] | undefined {
  for (const { field, max, inner } of plan) {
    const value = valueOf(message, field);
    if (value === undefined || value === null) continue;
    const path = prefix + field.name;
    if (field.fieldKind === "list" || field.fieldKind === "map") {
      const elements = field.fieldKind === "list" ? (value as unknown[]) : Object.values(value as object);
      if (max !== undefined && elements.length > max) return [path, max, elements.length];
      if (inner === undefined) continue;
      for (let i = 0; i < elements.length; i++) {
        const found = firstBreach(elements[i] as Record<string, unknown>, inner, `${path}[${i}].`);
        if (found !== undefined) return found;
      }
    } else if (inner !== undefined) {
      const found = firstBreach(value as Record<string, unknown>, inner, `${path}.`);
      if (found !== undefined) return found;
    }
  }
  return undefined;
}

/** Throws InvalidArgument when a message holds more elements than the contract allows. */
export function checkBounds(desc: DescMessage, message: Message): void {
  const plan = planFor(desc);
  if (plan.length === 0) return;
  const breach = firstBreach(message as unknown as Record<string, unknown>, plan, "");
  if (breach === undefined) return;
  const [field, max, size] = breach;
  throw invalidArgument([{ field, description: `must hold at most ${max} elements, got ${size}` }]);
}

/** The repeated fields and maps a message type can carry without a bound (Type.field); for tests of the contract. */
export function unboundedFields(desc: DescMessage, visiting = new Set<DescMessage>()): string[] {
  if (visiting.has(desc)) return [];
  visiting.add(desc);
  const found: string[] = [];
  for (const field of desc.fields) {
    if ((field.fieldKind === "list" || field.fieldKind === "map") && !hasOption(field, max_items)) found.push(`${desc.typeName}.${field.name}`);
    const held = heldMessage(field);
    if (held !== undefined) found.push(...unboundedFields(held, visiting));
  }
  return found;
}

export function requestBoundsInterceptor(): Interceptor {
  // Not async: a unary call passes straight on (a throw here reaches the caller's await as a
  // rejection), without a promise of its own on every call.
  return (next) => (req) => {
    if (!req.stream) {
      checkBounds(req.method.input, req.message);
      return next(req);
    }
    const messages = req.message;
    const input = req.method.input;
    return next({
      ...req,
      message: (async function* () {
        for await (const message of messages) {
          checkBounds(input, message);
          yield message;
        }
      })(),
    });
  };
}
