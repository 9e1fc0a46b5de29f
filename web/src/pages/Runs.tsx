// The runs of one experiment: params, latest metrics and tags as columns, filtered and
// ordered by the server with MLflow's search grammar, loaded a page of 1,000 at a time and
// scrolled virtually.
import { useEffect, useMemo, useState } from 'preact/hooks';
import { get, query, type Experiment, type Run, type RunList } from '../api';
import { Problem, Status } from '../components/Status';
import { VirtualTable, type Column } from '../components/VirtualTable';
import { duration, number, time } from '../format';
import { href } from '../router';
import { chooseForComparison, MAX_COMPARED } from './Compare';

const PAGE = 1000;

export function Runs(props: { experiment: string }) {
  const [filter, setFilter] = useState('');
  const [applied, setApplied] = useState('');
  const [order, setOrder] = useState('');
  const [runs, setRuns] = useState<Run[]>([]);
  const [complete, setComplete] = useState(false);
  const [error, setError] = useState<Error>();
  const [name, setName] = useState('');
  const [shown, setShown] = useState<Set<string> | null>(null);
  const [choosing, setChoosing] = useState(false);
  const [selected, setSelected] = useState<Set<string>>(new Set());
  const [groupBy, setGroupBy] = useState('');
  const compare = (chosen: Run[]) => {
    chooseForComparison(chosen);
    location.hash = '#/compare';
  };

  useEffect(() => {
    get<{ experiments: Experiment[] }>('/api/v1/experiments').then(
      (r) => setName(r.experiments.find((e) => e.experiment_id === props.experiment)?.name ?? props.experiment),
      () => setName(props.experiment),
    );
  }, [props.experiment]);

  useEffect(() => {
    const ctl = new AbortController();
    setRuns([]);
    setComplete(false);
    setError(undefined);
    (async () => {
      let token: string | undefined;
      const all: Run[] = [];
      try {
        do {
          const page = await get<RunList>(
            query('/api/v1/runs', { experiment_id: props.experiment, filter: applied, order_by: order, limit: PAGE, page_token: token }),
            ctl.signal,
          );
          all.push(...page.runs);
          setRuns(all.slice());
          token = page.next_page_token ?? undefined;
        } while (token && !ctl.signal.aborted);
        if (!ctl.signal.aborted) setComplete(true);
      } catch (e) {
        if (!ctl.signal.aborted) setError(e as Error);
      }
    })();
    return () => ctl.abort();
  }, [props.experiment, applied, order]);

  // Column names from the first rows loaded (a run's keys are usually its siblings' keys).
  const keys = useMemo(() => {
    const params = new Set<string>();
    const metrics = new Set<string>();
    const tags = new Set<string>();
    for (const r of runs.slice(0, 2000)) {
      Object.keys(r.params).forEach((k) => params.add(k));
      Object.keys(r.metrics).forEach((k) => metrics.add(k));
      Object.keys(r.tags).forEach((k) => !k.startsWith('mlflow.') && !k.startsWith('trainyard.') && tags.add(k));
    }
    return { params: [...params].sort(), metrics: [...metrics].sort(), tags: [...tags].sort() };
  }, [runs.length > 0 ? runs[0].run_id : '', Math.min(runs.length, 2000)]);

  // Grouped by a param: the table ordered by its value (stably), and a summary per value of
  // the first metric.
  const shownRuns = useMemo(() => {
    if (!groupBy) return runs;
    return runs
      .map((r, i) => [r, i] as const)
      .sort((a, b) => (a[0].params[groupBy] ?? '').localeCompare(b[0].params[groupBy] ?? '', 'en', { numeric: true }) || a[1] - b[1])
      .map(([r]) => r);
  }, [runs, groupBy]);
  const groupMetric = keys.metrics[0];
  const groups = useMemo(() => {
    if (!groupBy) return [];
    const by = new Map<string, { count: number; values: number[] }>();
    for (const r of runs) {
      const g = r.params[groupBy] ?? '(none)';
      const entry = by.get(g) ?? { count: 0, values: [] };
      entry.count++;
      const v = groupMetric ? r.metrics[groupMetric]?.value : null;
      if (v !== null && v !== undefined) entry.values.push(v);
      by.set(g, entry);
    }
    return [...by.entries()].sort((a, b) => a[0].localeCompare(b[0], 'en', { numeric: true }));
  }, [runs, groupBy, groupMetric]);
  const all: string[] = [...keys.metrics.map((k) => `metrics.${k}`), ...keys.params.map((k) => `params.${k}`), ...keys.tags.map((k) => `tags.${k}`)];
  const visible = shown ?? new Set(all.slice(0, 12));
  const sortBy = (key: string) => setOrder((o) => (o === `${key} DESC` ? `${key} ASC` : `${key} DESC`));

  const columns: Column<Run>[] = [
    {
      key: 'pick',
      title: '',
      width: 32,
      cell: (r) => (
        <input
          type="checkbox"
          aria-label={`choose ${r.name || r.run_id}`}
          checked={selected.has(r.run_id)}
          onChange={() => {
            const next = new Set(selected);
            next.has(r.run_id) ? next.delete(r.run_id) : next.add(r.run_id);
            setSelected(next);
          }}
        />
      ),
    },
    {
      key: 'name',
      title: 'Run',
      width: 200,
      cell: (r) => <a href={href('experiments', props.experiment, 'runs', r.run_id)}>{r.name || r.run_id}</a>,
      sort: 'attributes.run_name',
    },
    { key: 'status', title: 'Status', width: 100, cell: (r) => <Status state={r.status} /> },
    { key: 'start', title: 'Started', width: 175, cell: (r) => time(r.start_time), sort: 'attributes.start_time' },
    { key: 'duration', title: 'Duration', width: 100, cell: (r) => duration(r.start_time, r.end_time ?? undefined) },
    ...all
      .filter((k) => visible.has(k))
      .map((k): Column<Run> => {
        const [kind, ...rest] = k.split('.');
        const key = rest.join('.');
        return {
          key: k,
          title: k,
          width: 130,
          sort: `${kind}.\`${key}\``,
          cell: (r) => (kind === 'metrics' ? number(r.metrics[key]?.value) : kind === 'params' ? r.params[key] ?? '' : r.tags[key] ?? ''),
        };
      }),
  ];

  return (
    <div>
      <h1>
        <a href={href('experiments')}>Experiments</a> / {name}
      </h1>
      <form
        class="toolbar"
        onSubmit={(e) => {
          e.preventDefault();
          setApplied(filter.trim());
        }}
      >
        <input
          name="filter"
          class="filter"
          placeholder="metrics.loss < 0.1 AND params.lr = '0.01'"
          value={filter}
          onInput={(e) => setFilter(e.currentTarget.value)}
        />
        <button type="submit">Filter</button>
        <button type="button" onClick={() => setChoosing(!choosing)}>
          Columns
        </button>
        <label>
          group by{' '}
          <select name="group" value={groupBy} onChange={(e) => setGroupBy(e.currentTarget.value)}>
            <option value="">none</option>
            {keys.params.map((k) => (
              <option value={k}>{k}</option>
            ))}
          </select>
        </label>
        <button type="button" disabled={selected.size < 2} onClick={() => compare(runs.filter((r) => selected.has(r.run_id)))} data-testid="compare-chosen">
          Compare {selected.size || ''}
        </button>
        <button type="button" disabled={runs.length < 2} onClick={() => compare(runs)} data-testid="compare-all">
          Compare the first {Math.min(runs.length, MAX_COMPARED).toLocaleString('en')}
        </button>
        <span class="muted" data-testid="run-count">
          {runs.length.toLocaleString('en')} runs{complete ? '' : '…'}
        </span>
      </form>
      {choosing && (
        <div class="chooser" data-testid="column-chooser">
          {all.map((k) => (
            <label>
              <input
                type="checkbox"
                checked={visible.has(k)}
                onChange={() => {
                  const next = new Set(visible);
                  next.has(k) ? next.delete(k) : next.add(k);
                  setShown(next);
                }}
              />
              {k}
            </label>
          ))}
        </div>
      )}
      {groupBy && (
        <table class="list" data-testid="groups">
          <thead>
            <tr>
              <th>{groupBy}</th>
              <th>runs</th>
              {groupMetric && (
                <>
                  <th>mean {groupMetric}</th>
                  <th>min</th>
                  <th>max</th>
                </>
              )}
            </tr>
          </thead>
          <tbody>
            {groups.map(([g, e]) => (
              <tr>
                <th>{g}</th>
                <td>{e.count.toLocaleString('en')}</td>
                {groupMetric && (
                  <>
                    <td>{e.values.length ? number(e.values.reduce((a, v) => a + v, 0) / e.values.length) : ''}</td>
                    <td>{e.values.length ? number(e.values.reduce((a, v) => Math.min(a, v), Infinity)) : ''}</td>
                    <td>{e.values.length ? number(e.values.reduce((a, v) => Math.max(a, v), -Infinity)) : ''}</td>
                  </>
                )}
              </tr>
            ))}
          </tbody>
        </table>
      )}
      <Problem error={error} />
      <VirtualTable rows={shownRuns} columns={columns} rowKey={(r) => r.run_id} onSort={sortBy} sorted={order} testid="runs" />
    </div>
  );
}
