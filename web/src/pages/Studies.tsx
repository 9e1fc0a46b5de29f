// Studies: each one's optimization history with the best so far, parallel coordinates of
// its parameters against the objective, intermediate values per trial (pruned ones marked)
// and which parameters move the objective most.
import { useMemo } from 'preact/hooks';
import { get } from '../api';
import { Chart, type Series } from '../components/Chart';
import { Parallel, type Row } from '../components/Parallel';
import { Problem, Section, Status } from '../components/Status';
import { number, time } from '../format';
import { useLoad } from '../hooks';
import { href } from '../router';

interface Trial {
  number: number;
  params: Record<string, number | string | boolean>;
  state: string;
  value: number | null;
  intermediate: [number, number][];
  rung: number;
  resource: number;
  job_id?: string | null;
  run_id?: string | null;
}

interface Study {
  id: string;
  name: string;
  state: string;
  message?: string;
  spec: { objective: { metric: string; direction: 'minimize' | 'maximize' }; space: Record<string, unknown>; experiment?: string };
  counts: Record<string, number>;
  best?: Trial | null;
  created_at_ms: number;
  finished_at_ms?: number | null;
}

export function Studies() {
  const { data, error } = useLoad((s) => get<{ studies: Study[] }>('/api/v1/studies', s), [], 5000);
  return (
    <div>
      <h1>Studies</h1>
      <Problem error={error} />
      <table class="list" data-testid="studies">
        <thead>
          <tr>
            <th>Name</th>
            <th>State</th>
            <th>Objective</th>
            <th>Best</th>
            <th>Trials</th>
            <th>Created</th>
          </tr>
        </thead>
        <tbody>
          {data?.studies.map((s) => (
            <tr>
              <td>
                <a href={href('studies', s.name)}>{s.name}</a>
              </td>
              <td>
                <Status state={s.state} />
              </td>
              <td>
                {s.spec.objective.direction} {s.spec.objective.metric}
              </td>
              <td>{number(s.best?.value)}</td>
              <td>
                {Object.entries(s.counts)
                  .map(([k, v]) => `${v} ${k}`)
                  .join(', ')}
              </td>
              <td>{time(s.created_at_ms)}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

async function allTrials(name: string, signal: AbortSignal): Promise<Trial[]> {
  const out: Trial[] = [];
  let token: string | undefined;
  do {
    const q = new URLSearchParams({ max_results: '1000' });
    if (token) q.set('page_token', token);
    const page = await get<{ trials: Trial[]; next_page_token?: string | null }>(`/api/v1/studies/${encodeURIComponent(name)}/trials?${q}`, signal);
    out.push(...page.trials);
    token = page.next_page_token ?? undefined;
  } while (token);
  return out;
}

/** How much of the objective's variance each parameter explains alone: η², the share of the
 * variance between groups of trials (categories, or quantile bins of a number). Model-free,
 * and it sees effects that are not monotonic (a best value in the middle of a range). */
export function importances(trials: Trial[], names: string[]): { name: string; score: number; how: string }[] {
  const done = trials.filter((t) => t.value !== null && Number.isFinite(t.value));
  return names
    .map((name) => {
      const rows = done.filter((t) => t.params[name] !== undefined);
      if (rows.length < 4) return { name, score: 0, how: 'too few trials' };
      const ys = rows.map((t) => t.value as number);
      const numeric = rows.every((t) => typeof t.params[name] === 'number');
      let group: (t: Trial) => string;
      let how: string;
      if (numeric) {
        const sorted = rows.map((t) => t.params[name] as number).sort((a, b) => a - b);
        const bins = Math.max(2, Math.min(5, Math.floor(rows.length / 4)));
        const edges = Array.from({ length: bins - 1 }, (_, k) => sorted[Math.floor(((k + 1) * sorted.length) / bins)]);
        group = (t) => String(edges.filter((e) => (t.params[name] as number) >= e).length);
        how = `η² over ${bins} quantile bins`;
      } else {
        group = (t) => String(t.params[name]);
        how = 'η² over its values';
      }
      const mean = ys.reduce((a, v) => a + v, 0) / ys.length;
      const total = ys.reduce((a, v) => a + (v - mean) ** 2, 0);
      const groups = new Map<string, number[]>();
      rows.forEach((t, i) => groups.set(group(t), [...(groups.get(group(t)) ?? []), ys[i]]));
      let between = 0;
      for (const g of groups.values()) {
        const m = g.reduce((a, v) => a + v, 0) / g.length;
        between += g.length * (m - mean) ** 2;
      }
      return { name, score: total > 0 ? between / total : 0, how };
    })
    .sort((a, b) => b.score - a.score);
}

export function StudyPage(props: { study: string }) {
  const study = useLoad((s) => get<Study>(`/api/v1/studies/${encodeURIComponent(props.study)}`, s), [props.study], 5000);
  const trials = useLoad((s) => allTrials(props.study, s), [props.study, study.data?.counts ? JSON.stringify(study.data.counts) : '']);
  const s = study.data;
  const ts = trials.data ?? [];
  const names = useMemo(() => Object.keys(s?.spec.space ?? {}).sort(), [s?.spec.space]);
  const minimize = s?.spec.objective.direction !== 'maximize';
  const history = useMemo<Series[]>(() => {
    const done = ts.filter((t) => t.value !== null).sort((a, b) => a.number - b.number);
    let best: number | null = null;
    const bestSoFar = done.map((t) => {
      const v = t.value as number;
      if (best === null || (minimize ? v < best : v > best)) best = v;
      return best;
    });
    const x = done.map((t) => t.number);
    return [
      { label: 'value', x, y: done.map((t) => t.value) },
      { label: 'best so far', x, y: bestSoFar },
    ];
  }, [ts, minimize]);
  const curves = useMemo<Series[]>(
    () =>
      ts
        .filter((t) => t.intermediate.length > 0)
        .slice(0, 200)
        .map((t) => ({ label: `#${t.number}${t.state === 'pruned' ? ' (pruned)' : ''}`, x: t.intermediate.map((p) => p[0]), y: t.intermediate.map((p) => p[1]) })),
    [ts],
  );
  const rows = useMemo<Row[]>(
    () =>
      ts
        .filter((t) => t.value !== null)
        .map((t) => ({ values: [...names.map((n) => (t.params[n] === undefined ? null : (t.params[n] as number | string))), t.value], faint: t.state === 'pruned' })),
    [ts, names],
  );
  const imp = useMemo(() => importances(ts, names), [ts, names]);
  return (
    <div>
      <h1>
        <a href={href('studies')}>Studies</a> / {props.study}
      </h1>
      <Problem error={study.error ?? trials.error} />
      {s && (
        <>
          <p class="summary" data-testid="study-summary">
            <Status state={s.state} /> {s.spec.objective.direction} {s.spec.objective.metric} · best {number(s.best?.value)}
            {s.best && <> (trial #{s.best.number})</>} ·{' '}
            {Object.entries(s.counts)
              .map(([k, v]) => `${v} ${k}`)
              .join(', ')}
          </p>
          {s.message && <p class="muted">{s.message}</p>}
          <Section title="Optimization history">
            {history[0].x.length > 0 ? <Chart title="objective" series={history} xLabel="trial" /> : <p class="muted">no finished trial yet</p>}
          </Section>
          <Section title="Parameters → objective">
            {rows.length > 0 ? <Parallel titles={[...names, s.spec.objective.metric]} rows={rows} testid="study-parallel" /> : <p class="muted">no finished trial yet</p>}
          </Section>
          <Section title="Parameter importance">
            <table class="list" data-testid="importances">
              <tbody>
                {imp.map((i) => (
                  <tr>
                    <th>{i.name}</th>
                    <td>
                      <span class="bar" style={{ width: `${Math.round(i.score * 200)}px` }} />
                    </td>
                    <td>{i.score.toFixed(3)}</td>
                    <td class="muted small">{i.how}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </Section>
          {curves.length > 0 && (
            <Section title="Intermediate values">
              <Chart title="intermediate" series={curves} xLabel="step" />
            </Section>
          )}
          <Section title="Trials">
            <table class="list" data-testid="trials">
              <thead>
                <tr>
                  <th>#</th>
                  <th>State</th>
                  <th>Value</th>
                  {names.map((n) => (
                    <th>{n}</th>
                  ))}
                  <th>Rung</th>
                  <th>Job</th>
                </tr>
              </thead>
              <tbody>
                {ts.map((t) => (
                  <tr>
                    <td>{t.number}</td>
                    <td>
                      <Status state={t.state} />
                    </td>
                    <td>{number(t.value)}</td>
                    {names.map((n) => (
                      <td>{String(t.params[n] ?? '')}</td>
                    ))}
                    <td>{t.rung}</td>
                    <td>{t.job_id && <a href={href('jobs', t.job_id)}>{t.job_id.slice(-8)}</a>}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </Section>
        </>
      )}
    </div>
  );
}
