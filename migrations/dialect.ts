// The databases the schema history is written for. src/db/ takes this name from here, so the
// arrow runs one way: src/db/migrator.ts → migrations/, never back.
export type DialectName = "sqlite" | "postgres";
