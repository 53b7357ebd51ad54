// Retrying a paid action through a server fault (docs/protocol.md, "Server faults and
// retries"): an `error` with code `unavailable` or `internal` and a `retry_after_ms`
// hint is the server's fault, not the request's. The same request is sent again, with
// the same idempotency key, so a retry can never charge twice: first after the hint,
// then doubling the wait each time up to RETRY_CAP_MS, for at most MAX_RETRIES retries.

export const RETRY_CAP_MS = 30000;
export const MAX_RETRIES = 5;

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** True for an error the server says is its own fault and worth retrying later. */
export function isServerFault(error) {
  return !!error && (error.code === 'unavailable' || error.code === 'internal')
    && Number.isFinite(error.retry_after_ms) && error.retry_after_ms >= 0;
}

/** The wait before retry number `retry` (1, 2, …): the hint, doubled each time, capped. */
export function retryDelay(hintMs, retry) {
  return Math.min(hintMs * 2 ** (retry - 1), RETRY_CAP_MS);
}

/**
 * Runs `attempt()` (which sends the same request each time) until it succeeds or fails
 * with anything but a server fault. Before each retry, `onRetry({retry, delay, error})`.
 * When the retries run out, throws the last error with `gaveUp: true` and `retries`.
 */
export async function retryServerFaults(attempt, { onRetry = () => {}, maxRetries = MAX_RETRIES, wait = sleep } = {}) {
  for (let retry = 1; ; retry++) {
    try {
      return await attempt();
    } catch (error) {
      if (!isServerFault(error)) throw error;
      if (retry > maxRetries) throw { ...error, gaveUp: true, retries: maxRetries };
      const delay = retryDelay(error.retry_after_ms, retry);
      onRetry({ retry, delay, error });
      await wait(delay);
    }
  }
}
