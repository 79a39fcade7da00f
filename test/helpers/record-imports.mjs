// `node --import ./test/helpers/record-imports.mjs …` writes every module the process resolves
// (one URL a line) to the file FOREMAN_TEST_IMPORTS_FILE names, for tests of what a command loads.
import { register } from "node:module";

register("./record-imports-hooks.mjs", import.meta.url);
