import { useEffect, useState } from 'preact/hooks';

export interface Loaded<T> {
  data?: T;
  error?: Error;
  loading: boolean;
  reload: () => void;
}

/** Runs `load` when `deps` change (and every `refreshMs` if given); the newest answer wins. */
export function useLoad<T>(load: (signal: AbortSignal) => Promise<T>, deps: unknown[], refreshMs?: number): Loaded<T> {
  const [state, setState] = useState<{ data?: T; error?: Error; loading: boolean }>({ loading: true });
  const [tick, setTick] = useState(0);
  useEffect(() => {
    const ctl = new AbortController();
    let timer: number | undefined;
    const run = () => {
      load(ctl.signal).then(
        (data) => !ctl.signal.aborted && setState({ data, loading: false }),
        (error) => !ctl.signal.aborted && setState((s) => ({ ...s, error, loading: false })),
      );
      if (refreshMs) timer = window.setTimeout(run, refreshMs);
    };
    run();
    return () => {
      ctl.abort();
      window.clearTimeout(timer);
    };
    // A new refresh period (none: stop polling) takes effect at once.
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [...deps, tick, refreshMs]);
  return { ...state, reload: () => setTick((t) => t + 1) };
}
