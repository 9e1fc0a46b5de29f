// One run: params, tags, metric charts (refreshed while it runs), artifacts with previews,
// and the log of the job that made it.
import { useEffect, useMemo, useState } from 'preact/hooks';
import { get, query, request, type MetricSeries, type Run as RunView } from '../api';
import { Chart, smooth, type Series } from '../components/Chart';
import { Log } from '../components/Log';
import { KeyValues, Problem, Section, Status } from '../components/Status';
import { bytes, duration, number, time } from '../format';
import { useLoad } from '../hooks';
import { href } from '../router';

const POINTS = 2000;
/** Largest artifact a preview downloads. */
const MAX_PREVIEW_BYTES = 20 << 20;

export function Run(props: { experiment: string; run: string }) {
  const running = (r?: RunView) => r?.status === 'RUNNING' || r?.status === 'SCHEDULED';
  const [live, setLive] = useState(true);
  const run = useLoad((s) => get<RunView>(`/api/v1/runs/${encodeURIComponent(props.run)}`, s), [props.run], live ? 5000 : undefined);
  useEffect(() => {
    if (run.data && !running(run.data)) setLive(false);
  }, [run.data?.status]);
  const r = run.data;
  const system = (k: string) => k.startsWith('mlflow.') || k.startsWith('trainyard.');
  const tags = r ? Object.fromEntries(Object.entries(r.tags).filter(([k]) => !system(k))) : {};
  const systemTags = r ? Object.fromEntries(Object.entries(r.tags).filter(([k]) => system(k))) : {};
  return (
    <div>
      <h1>
        <a href={href('experiments', props.experiment)}>Runs</a> / {r?.name || props.run}
      </h1>
      <Problem error={run.error} />
      {r && (
        <>
          <p class="summary" data-testid="run-summary">
            <Status state={r.status} /> started {time(r.start_time)} · {duration(r.start_time, r.end_time ?? undefined)} · by {r.user_id || 'unknown'}
            {r.job_id && (
              <>
                {' '}
                · job <a href={href('jobs', r.job_id)}>{r.job_id}</a>
              </>
            )}
          </p>
          <Lineage run={r} />
          <Metrics run={r} live={running(r)} />
          <div class="columns">
            <Section title="Parameters">
              <KeyValues values={r.params} testid="params" />
            </Section>
            <Section title="Tags">
              <KeyValues values={tags} testid="tags" />
              <details>
                <summary>system tags ({Object.keys(systemTags).length})</summary>
                <KeyValues values={systemTags} />
              </details>
            </Section>
          </div>
          <Artifacts run={r.run_id} />
          {r.job_id && (
            <Section title="Log">
              <Log job={r.job_id} live={running(r)} />
            </Section>
          )}
        </>
      )}
    </div>
  );
}

/** Dataset version in (the run's `dataset` param or tag), model versions out (those whose
 * source is this run), and the version it started from. */
function Lineage(props: { run: RunView }) {
  const t = props.run.tags;
  const dataset = t['trainyard.dataset'] ?? props.run.params['dataset'];
  const source = t['trainyard.source'] ?? t['trainyard.teacher'];
  const out = useLoad(
    (s) =>
      get<{ model_versions?: { name: string; version: string }[] }>(
        query('/api/2.0/mlflow/model-versions/search', { filter: `run_id='${props.run.run_id}'` }),
        s,
      ),
    [props.run.run_id],
  );
  const versions = out.data?.model_versions ?? [];
  if (!dataset && !source && versions.length === 0) return null;
  const modelLink = (ref: string) => {
    const [name, version] = ref.split(':');
    return version ? <a href={href('models', name, 'versions', version)}>{ref}</a> : <a href={href('models', name)}>{ref}</a>;
  };
  return (
    <p class="lineage" data-testid="lineage">
      {dataset && <>dataset {dataset} → </>}
      {source && <>from {modelLink(source)} → </>}
      this run
      {versions.map((v) => (
        <>
          {' '}
          → {modelLink(`${v.name}:${v.version}`)}
        </>
      ))}
    </p>
  );
}

function Metrics(props: { run: RunView; live: boolean }) {
  const keys = Object.keys(props.run.metrics).sort();
  const [log, setLog] = useState(false);
  const [weight, setWeight] = useState(0);
  const [axis, setAxis] = useState<'step' | 'time'>('step');
  const latest = keys.map((k) => props.run.metrics[k]?.timestamp ?? 0).join(',');
  const series = useLoad(
    (s) =>
      Promise.all(
        keys.map((k) => get<MetricSeries>(query(`/api/v1/runs/${encodeURIComponent(props.run.run_id)}/metrics/${encodeURIComponent(k)}`, { max_points: POINTS }), s)),
      ),
    [props.run.run_id, latest],
  );
  // One value (a test score) is a number, not a chart; per-layer norms are one chart each
  // for weights and gradients, a line per layer.
  const isNorm = (k: string) => k.startsWith('weight_norm/') || k.startsWith('grad_norm/');
  const single = (series.data ?? []).filter((m) => m.points.length <= 1 && !isNorm(m.key));
  const curves = (series.data ?? []).filter((m) => m.points.length > 1 && !isNorm(m.key));
  const norms = (prefix: string): Series[] =>
    (series.data ?? [])
      .filter((m) => m.key.startsWith(prefix))
      .map((m) => ({
        label: m.key.slice(prefix.length),
        x: m.points.map((p) => (axis === 'step' ? p.step : p.timestamp / 1000)),
        y: m.points.map((p) => p.value),
      }));
  const weightNorms = norms('weight_norm/');
  const gradNorms = norms('grad_norm/');
  if (keys.length === 0) return <Section title="Metrics">{<p class="muted">no metrics</p>}</Section>;
  return (
    <Section title="Metrics">
      <div class="toolbar">
        <label>
          <input type="checkbox" checked={log} onChange={() => setLog(!log)} /> log scale
        </label>
        <label>
          smoothing <input type="range" min="0" max="0.99" step="0.01" value={weight} onInput={(e) => setWeight(Number(e.currentTarget.value))} /> {weight.toFixed(2)}
        </label>
        <label>
          x axis{' '}
          <select value={axis} onChange={(e) => setAxis(e.currentTarget.value as 'step' | 'time')}>
            <option value="step">step</option>
            <option value="time">time</option>
          </select>
        </label>
        {props.live && <span class="muted">live</span>}
      </div>
      <Problem error={series.error} />
      {single.length > 0 && (
        <table class="kv" data-testid="single-metrics">
          <tbody>
            {single.map((m) => (
              <tr>
                <th>{m.key}</th>
                <td>{number(m.points[0]?.value)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {(weightNorms.length > 0 || gradNorms.length > 0) && (
        <div class="charts" data-testid="layer-norms">
          {weightNorms.length > 0 && <Chart title="weight norm per layer" series={weightNorms} log={log} time={axis === 'time'} xLabel={axis} />}
          {gradNorms.length > 0 && <Chart title="gradient norm per layer" series={gradNorms} log={log} time={axis === 'time'} xLabel={axis} />}
        </div>
      )}
      <div class="charts">
        {curves.map((m) => (
          <MetricChart key={m.key} series={m} log={log} weight={weight} axis={axis} />
        ))}
      </div>
    </Section>
  );
}

function MetricChart(props: { series: MetricSeries; log: boolean; weight: number; axis: 'step' | 'time' }) {
  const m = props.series;
  const data = useMemo<Series[]>(() => {
    const x = m.points.map((p) => (props.axis === 'step' ? p.step : p.timestamp / 1000));
    const y = m.points.map((p) => p.value);
    const s: Series[] = [{ label: m.key, x, y }];
    if (props.weight > 0) s.push({ label: `${m.key} (smoothed)`, x, y: smooth(y, props.weight) });
    return s;
  }, [m, props.weight, props.axis]);
  return (
    <div>
      <Chart title={m.key} series={data} log={props.log} time={props.axis === 'time'} xLabel={props.axis} />
      <p class="muted small">
        {m.total_points.toLocaleString('en')} points{m.sampled ? `, ${m.points.length.toLocaleString('en')} drawn (each bucket's minimum and maximum kept)` : ''}
      </p>
    </div>
  );
}

interface ArtifactFile {
  path: string;
  is_dir: boolean;
  file_size?: number;
}

function Artifacts(props: { run: string }) {
  const [dir, setDir] = useState('');
  const [preview, setPreview] = useState<{ path: string; text?: string; image?: string } | null>(null);
  const list = useLoad(
    (s) => get<{ files?: ArtifactFile[] }>(query('/api/2.0/mlflow/artifacts/list', { run_id: props.run, path: dir }), s),
    [props.run, dir],
  );
  const open = async (f: ArtifactFile) => {
    if (f.is_dir) return setDir(f.path);
    if ((f.file_size ?? 0) > MAX_PREVIEW_BYTES) {
      setPreview({ path: f.path, text: `${bytes(f.file_size ?? 0)}: too large to preview here (up to ${bytes(MAX_PREVIEW_BYTES)})` });
      return;
    }
    if (preview?.image) URL.revokeObjectURL(preview.image);
    const res = await request(query('/get-artifact', { run_uuid: props.run, path: f.path }));
    if (/\.(png|jpe?g|gif|webp)$/i.test(f.path)) {
      setPreview({ path: f.path, image: URL.createObjectURL(await res.blob()) });
      return;
    }
    const blob = await res.blob();
    let text = await blob.slice(0, 200_000).text();
    if (/\.json$/i.test(f.path)) {
      try {
        text = JSON.stringify(JSON.parse(text), null, 2);
      } catch {
        // Cut off or not JSON: shown as it is.
      }
    } else if (/\.csv$/i.test(f.path)) {
      text = text.split('\n').slice(0, 21).join('\n');
    }
    setPreview({ path: f.path, text });
  };
  const files = list.data?.files ?? [];
  return (
    <Section title="Artifacts">
      <p class="muted">
        <a onClick={() => setDir('')}>/</a>
        {dir &&
          dir.split('/').map((part, i, all) => (
            <>
              <a onClick={() => setDir(all.slice(0, i + 1).join('/'))}>{part}</a>/
            </>
          ))}
      </p>
      <Problem error={list.error} />
      {files.length === 0 && !list.loading ? (
        <p class="muted">none</p>
      ) : (
        <ul class="artifacts" data-testid="artifacts">
          {files.map((f) => (
            <li>
              <a onClick={() => open(f)}>{f.path.split('/').pop()}</a>
              {f.is_dir ? '/' : ` (${bytes(f.file_size ?? 0)})`}
            </li>
          ))}
        </ul>
      )}
      {preview && (
        <div class="preview" data-testid="artifact-preview">
          <h3>{preview.path}</h3>
          {preview.image ? <img src={preview.image} alt={preview.path} /> : <pre>{preview.text}</pre>}
        </div>
      )}
    </Section>
  );
}
