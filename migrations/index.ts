// Every migration, in order. Names sort in the order they run; never rename or edit one that
// has shipped: add a new one.
import type { Migration } from "kysely";
import type { DialectName } from "../src/db/dialect.js";
import { initial } from "./0001_initial.js";

export function migrations(dialect: DialectName): Record<string, Migration> {
  return {
    "0001_initial": initial(dialect),
  };
}
