// The dialect names are the schema history's (migrations/dialect.ts): db/ imports migrations/,
// never the other way round.
export type { DialectName } from "../../migrations/dialect.js";
