// The one wait a long-lived stream makes: until something wakes it, a timeout passes or the
// call's signal aborts, whichever comes first, always cleaning up its timer and listener (a
// wait that ignored the signal would keep a cancelled stream alive).
export function waitForWake(
  signal: AbortSignal,
  timeoutMs: number | undefined,
  setWake: (wake: (() => void) | undefined) => void,
): Promise<void> {
  return new Promise<void>((resolve) => {
    if (signal.aborted) {
      resolve();
      return;
    }
    const timer = timeoutMs === undefined ? undefined : setTimeout(done, timeoutMs);
    function done() {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      setWake(undefined);
      resolve();
    }
    setWake(done);
    signal.addEventListener("abort", done);
  });
}
