// The SQLite prepared-statement cache on a real better-sqlite3 database: a statement is kept by
// its SQL, the least recently used goes past the bound, a statement still iterating is never
// handed out twice, and a kept statement follows a schema change.
import SqliteDatabase from "better-sqlite3";
import { afterEach, describe, expect, it } from "vitest";
import { withStatementCache } from "../../src/db/statement-cache.js";

describe("withStatementCache", () => {
  const opened: SqliteDatabase.Database[] = [];
  afterEach(() => {
    for (const db of opened.splice(0)) if (db.open) db.close();
  });
  function open() {
    const sqlite = new SqliteDatabase(":memory:");
    opened.push(sqlite);
    sqlite.exec("create table t (id integer primary key, name text)");
    sqlite.exec("insert into t (name) values ('a'), ('b'), ('c')");
    return sqlite;
  }

  it("hands out one statement per SQL text and answers with it", () => {
    const db = withStatementCache(open());
    const first = db.prepare("select name from t where id = ?");
    expect(db.prepare("select name from t where id = ?")).toBe(first);
    expect(db.prepare("select name from t where id = ? ")).not.toBe(first);
    expect(first.all([2])).toEqual([{ name: "b" }]);
  });

  it("drops the least recently used statement past its bound", () => {
    const db = withStatementCache(open(), 2);
    const a = db.prepare("select 1");
    const b = db.prepare("select 2");
    expect(db.prepare("select 1")).toBe(a); // now b is the least recent
    db.prepare("select 3");
    expect(db.prepare("select 1")).toBe(a);
    expect(db.prepare("select 2")).not.toBe(b);
  });

  it("gives a fresh statement while the kept one is still iterating", () => {
    const db = withStatementCache(open());
    const sql = "select name from t order by id";
    const rows = db.prepare(sql).iterate([]) as IterableIterator<{ name: string }>;
    expect(rows.next().value).toEqual({ name: "a" });
    expect(db.prepare(sql).all([])).toEqual([{ name: "a" }, { name: "b" }, { name: "c" }]);
    expect([...rows]).toEqual([{ name: "b" }, { name: "c" }]);
  });

  it("follows a schema change in a kept statement", () => {
    const sqlite = open();
    const db = withStatementCache(sqlite);
    expect(db.prepare("select * from t where id = ?").all([1])).toEqual([{ id: 1, name: "a" }]);
    sqlite.exec("alter table t add column note text default 'n'");
    expect(db.prepare("select * from t where id = ?").all([1])).toEqual([{ id: 1, name: "a", note: "n" }]);
  });

  it("closes the database", () => {
    const sqlite = open();
    withStatementCache(sqlite).close();
    expect(sqlite.open).toBe(false);
  });
});
