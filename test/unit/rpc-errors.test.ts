// The error assertions themselves: a code may carry more than one reason, so the reason is
// checked on its own, by default the code's usual one, and a code without one needs it named.
import { Code, ConnectError } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { foremanError, notFound } from "../../src/core/errors.js";
import { DEFAULT_REASONS, expectCode, expectError } from "../helpers/rpc-errors.js";

const fails = (error: ConnectError) => Promise.reject(error);

describe("expectError and expectCode", () => {
  it("pass on the code with its default reason, or with the reason named", async () => {
    await expectCode(fails(notFound("workspace", "w-1")), Code.NotFound);
    await expectError(fails(notFound("workspace", "w-1")), { code: Code.NotFound, message: "workspace w-1" });
    const unavailable = () => fails(foremanError(Code.Unavailable, "WORKER_UNAVAILABLE", "no worker can take it"));
    await expectCode(unavailable(), Code.Unavailable, "WORKER_UNAVAILABLE");
    await expectError(unavailable(), { code: Code.Unavailable, reason: "WORKER_UNAVAILABLE", message: /no worker/ });
  });

  it("fail on another code, another reason, no ErrorInfo, a second ErrorInfo or another message", async () => {
    await expect(expectCode(fails(notFound("workspace", "w")), Code.AlreadyExists)).rejects.toThrow();
    await expect(expectCode(fails(foremanError(Code.NotFound, "INTERNAL", "odd")), Code.NotFound)).rejects.toThrow();
    await expect(expectCode(fails(new ConnectError("bare", Code.NotFound)), Code.NotFound)).rejects.toThrow();
    const twice = notFound("workspace", "w");
    twice.details.push(...notFound("repository", "r").details);
    await expect(expectCode(fails(twice), Code.NotFound)).rejects.toThrow();
    await expect(expectError(fails(notFound("workspace", "w")), { code: Code.NotFound, message: "repository" })).rejects.toThrow();
    await expect(expectError(fails(notFound("workspace", "w")), { code: Code.NotFound, message: /^repository/ })).rejects.toThrow();
    await expect(expectCode(Promise.resolve("fine"), Code.NotFound)).rejects.toThrow(/expected the call to fail/);
  });

  it("give a code with several reasons no default: the test must name the one it expects", async () => {
    expect(DEFAULT_REASONS[Code.Unavailable]).toBeUndefined();
    const provider = fails(foremanError(Code.Unavailable, "PROVIDER_UNAVAILABLE", "cannot reach the OpenID provider"));
    await expect(expectCode(provider, Code.Unavailable)).rejects.toThrow(/no default reason/);
  });
});
