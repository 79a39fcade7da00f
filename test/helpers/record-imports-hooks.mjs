// The resolve hook behind record-imports.mjs; it runs on Node's module-loader thread.
import { appendFileSync } from "node:fs";
import process from "node:process";

export async function resolve(specifier, context, next) {
  const resolved = await next(specifier, context);
  const file = process.env.FOREMAN_TEST_IMPORTS_FILE;
  if (file !== undefined && file !== "") appendFileSync(file, `${resolved.url}\n`);
  return resolved;
}
