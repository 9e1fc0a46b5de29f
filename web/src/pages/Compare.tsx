// Compare runs: each metric's curves of up to 1,000 runs overlaid (downsampled by the
// server, every bucket's extremes kept), parameters → metric as parallel coordinates, and
// the parameters that differ between the runs.
import { useEffect, useMemo, useState } from 'preact/hooks';
import { get, post, type Run } from '../api';
import { Chart, type Series } from '../components/Chart';
import { Parallel, type Row } from '../components/Parallel';
import { Problem, Section } from '../components/Status';
import { VirtualTable, type Column } from '../components/VirtualTable';
import { number } from '../format';
import { useLoad } from '../hooks';
import { href } from '../router';

export const MAX_COMPARED = 1000;
const CHOSEN_KEY = 'trainyard.compare';

/** Keeps the runs to compare for the compare page (too many for a URL). */
export function chooseForComparison(runs: Run[]) {
  sessionStorage.setItem(CHOSEN_KEY, JSON.stringify(runs.slice(0, MAX_COMPARED)));
}

interface Histories {
  key: string;
  series: { run_id: string; total_points: number; sampled: boolean; points: { step: number; timestamp: number; value: number | null }[] }[];
}

/** The runs named in the route (`#/compare?runs=a,b`), else the ones the runs page chose. */
function useRuns(ids: string[]): { runs: Run[]; error?: Error } {
  const [state, setState] = useState<{ runs: Run[]; error?: Error }>({ runs: [] });
  useEffect(() => {
    if (ids.length === 0) {
      try {
        setState({ runs: JSON.parse(sessionStorage.getItem(CHOSEN_KEY) ?? '[]') });
      } catch {
        setState({ runs: [] });
      }
      return;
    }
    const ctl = new AbortController();
    Promise.all(ids.slice(0, MAX_COMPARED).map((id) => get<Run>(`/api/v1/runs/${encodeURIComponent(id)}`, ctl.signal))).then(
      (runs) => setState({ runs }),
      (error) => !ctl.signal.aborted && setState({ runs: [], error }),
    );
    return () => ctl.abort();
  }, [ids.join(',')]);
  return state;
}

export function Compare(props: { runs: string[] }) {
  const { runs, error } = useRuns(props.runs);
  const keys = useMemo(() => Array.from(new Set(runs.flatMap((r) => Object.keys(r.metrics)))).sort(), [runs]);
  const params = useMemo(() => Array.from(new Set(runs.flatMap((r) => Object.keys(r.params)))).sort(), [runs]);
  const [metric, setMetric] = useState<string>('');
  const chosen = metric || keys[0] || '';
  const [log, setLog] = useState(false);
  const differing = useMemo(() => params.filter((p) => new Set(runs.map((r) => r.params[p] ?? '')).size > 1), [runs, params]);
  const [all, setAll] = useState(false);
  const shownParams = all ? params : differing;
  // Fewer points per run as more runs are drawn: about 30,000 in all (300 each for 100
  // runs), the server keeping each bucket's extremes so a spike survives. Few points per
  // run also let the server answer from its stored rollups instead of raw points: 100 runs
  // of 10,000 steps take 0.08 s at 300 points each and 1.6 s at 1,000 (bench/ui).
  const perRun = Math.max(50, Math.min(2000, Math.floor(30_000 / Math.max(1, runs.length))));
  const histories = useLoad(
    () =>
      chosen
        ? post<Histories>('/api/v1/runs/metric-histories', { run_ids: runs.map((r) => r.run_id), key: chosen, max_points: perRun })
        : Promise.resolve({ key: '', series: [] }),
    [chosen, runs.map((r) => r.run_id).join(',')],
  );
  const names = useMemo(() => new Map(runs.map((r) => [r.run_id, r.name || r.run_id])), [runs]);
  const series = useMemo<Series[]>(
    () =>
      (histories.data?.series ?? [])
        .filter((s) => s.points.length > 0)
        .map((s) => ({ label: names.get(s.run_id) ?? s.run_id, x: s.points.map((p) => p.step), y: s.points.map((p) => p.value) })),
    [histories.data, names],
  );
  const parallelRows = useMemo<Row[]>(
    () =>
      runs
        .filter((r) => r.metrics[chosen]?.value !== undefined && r.metrics[chosen]?.value !== null)
        .map((r) => ({
          values: [
            ...differing.map((p) => {
              const v = r.params[p];
              if (v === undefined) return null;
              const n = Number(v);
              return v.trim() !== '' && Number.isFinite(n) ? n : v;
            }),
            r.metrics[chosen].value,
          ],
        })),
    [runs, differing, chosen],
  );
  const columns: Column<Run>[] = [
    { key: 'run', title: 'Run', width: 200, cell: (r) => <a href={href('experiments', r.experiment_id, 'runs', r.run_id)}>{r.name || r.run_id}</a> },
    ...keys.slice(0, 6).map((k): Column<Run> => ({ key: `m.${k}`, title: k, width: 110, cell: (r) => number(r.metrics[k]?.value) })),
    ...shownParams.map((p): Column<Run> => ({ key: `p.${p}`, title: p, width: 120, cell: (r) => r.params[p] ?? '' })),
  ];
  const total = histories.data?.series.reduce((n, s) => n + s.total_points, 0) ?? 0;
  return (
    <div>
      <h1>Compare {runs.length.toLocaleString('en')} runs</h1>
      <Problem error={error ?? histories.error} />
      {runs.length === 0 && <p class="muted">Choose runs on an experiment's runs page, then "Compare".</p>}
      {runs.length > 0 && (
        <>
          <div class="toolbar">
            <label>
              metric{' '}
              <select name="metric" value={chosen} onChange={(e) => setMetric(e.currentTarget.value)}>
                {keys.map((k) => (
                  <option value={k}>{k}</option>
                ))}
              </select>
            </label>
            <label>
              <input type="checkbox" checked={log} onChange={() => setLog(!log)} /> log scale
            </label>
            <span class="muted small" data-testid="compare-points">
              {series.length} curves, {series.reduce((n, s) => n + s.x.length, 0).toLocaleString('en')} points drawn of {total.toLocaleString('en')}
            </span>
          </div>
          <Section title={chosen}>{series.length > 0 ? <Chart title={chosen} series={series} log={log} xLabel="step" height={360} /> : <p class="muted">no values</p>}</Section>
          <Section title={`Parameters → ${chosen}`}>
            {differing.length > 0 && parallelRows.length > 0 ? (
              <Parallel titles={[...differing, chosen]} rows={parallelRows} testid="compare-parallel" />
            ) : (
              <p class="muted">the runs' parameters do not differ</p>
            )}
          </Section>
          <Section title="Parameters">
            <label class="small">
              <input type="checkbox" checked={all} onChange={() => setAll(!all)} /> show parameters that are the same in every run ({params.length - differing.length})
            </label>
            <VirtualTable rows={runs} columns={columns} rowKey={(r) => r.run_id} height={Math.min(600, 40 + runs.length * 28)} testid="compare-diff" />
          </Section>
        </>
      )}
    </div>
  );
}
