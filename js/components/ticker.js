// One 1 s interval per view drives every live elapsed-time display in it:
// 500 running cards cost one timer, not 500.

export function createTicker(signal, periodMs = 1000) {
  const subscribers = new Set();
  let id = null;
  const tick = () => {
    const now = Date.now();
    for (const fn of subscribers) fn(now);
  };
  const stop = () => {
    if (id !== null) clearInterval(id);
    id = null;
  };
  signal.addEventListener("abort", () => {
    stop();
    subscribers.clear();
  }, { once: true });
  return {
    /** Call fn(now) every period until the returned function is called. */
    add(fn) {
      subscribers.add(fn);
      if (id === null && !signal.aborted) id = setInterval(tick, periodMs);
      return () => {
        subscribers.delete(fn);
        if (subscribers.size === 0) stop();
      };
    },
    get size() {
      return subscribers.size;
    },
  };
}
