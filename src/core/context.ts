// What core operations run against: the database and a clock (tests may move time).
import type { Kysely } from "kysely";
import type { Database } from "../db/schema.js";
import type { DialectName } from "../db/dialect.js";

export interface Core {
  db: Kysely<Database>;
  dialect: DialectName;
  now(): Date;
}
