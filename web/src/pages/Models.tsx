// Registered models, their versions (aliases, stage, lineage, compression reports side by
// side) and serving state with load/unload through the Open Inference Protocol.
import { useState } from 'preact/hooks';
import { get, post, query, request, type Model as ModelView, type ModelVersion } from '../api';
import { Confusion, reportOf } from '../components/Confusion';
import { KeyValues, Problem, Section } from '../components/Status';
import { number, time } from '../format';
import { useLoad } from '../hooks';
import { href } from '../router';

export function Models() {
  const { data, error } = useLoad((s) => get<{ models: ModelView[] }>('/api/v1/models', s), []);
  return (
    <div>
      <h1>Models</h1>
      <Problem error={error} />
      <table class="list" data-testid="models">
        <thead>
          <tr>
            <th>Name</th>
            <th>Latest version</th>
            <th>Aliases</th>
            <th>Updated</th>
          </tr>
        </thead>
        <tbody>
          {data?.models.map((m) => (
            <tr>
              <td>
                <a href={href('models', m.name)}>{m.name}</a>
              </td>
              <td>{m.versions[0] && <a href={href('models', m.name, 'versions', m.versions[0].version)}>{m.versions[0].version}</a>}</td>
              <td>
                {Object.entries(m.aliases)
                  .map(([a, v]) => `${a} → ${v}`)
                  .join(', ')}
              </td>
              <td>{time(m.last_updated_time)}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

const HEADLINES: [string, string][] = [
  ['trainyard.lineage', 'lineage'],
  ['trainyard.source', 'from'],
  ['trainyard.format', 'format'],
  ['trainyard.license', 'license'],
  ['trainyard.parameters', 'parameters'],
  ['trainyard.onnx.bytes', 'ONNX bytes'],
  ['trainyard.compression.method', 'compression'],
  ['trainyard.compression.size_ratio', '× smaller'],
  ['trainyard.compression.fell_back', 'kept in float'],
];

function headline(v: ModelVersion, key: string): string {
  if (key === 'metrics') {
    return Object.entries(v.tags)
      .filter(([k]) => k.startsWith('eval.') || k.startsWith('metric.') || k.endsWith('_drop'))
      .map(([k, x]) => `${k.replace(/^trainyard\.compression\./, '')} ${number(Number(x))}`)
      .join(', ');
  }
  return v.tags[key] ?? '';
}

export function Model(props: { model: string }) {
  const { data, error } = useLoad((s) => get<ModelView>(`/api/v1/models/${encodeURIComponent(props.model)}`, s), [props.model]);
  return (
    <div>
      <h1>
        <a href={href('models')}>Models</a> / {props.model}
      </h1>
      <Problem error={error} />
      {data && <LineageGraph model={data} />}
      {data && (
        <table class="list" data-testid="versions">
          <thead>
            <tr>
              <th>Version</th>
              <th>Aliases</th>
              <th>Stage</th>
              {HEADLINES.map(([, t]) => (
                <th>{t}</th>
              ))}
              <th>metrics</th>
              <th>Created</th>
            </tr>
          </thead>
          <tbody>
            {data.versions.map((v) => (
              <tr>
                <td>
                  <a href={href('models', props.model, 'versions', v.version)}>{v.version}</a>
                </td>
                <td>{v.aliases.join(', ')}</td>
                <td>{v.stage}</td>
                {HEADLINES.map(([k]) => (
                  <td>{headline(v, k)}</td>
                ))}
                <td class="small">{headline(v, 'metrics')}</td>
                <td>{time(v.creation_time)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </div>
  );
}

interface IndexEntry {
  name: string;
  version?: string;
  state: string;
  reason?: string;
}

export function Version(props: { model: string; version: string }) {
  const model = useLoad((s) => get<ModelView>(`/api/v1/models/${encodeURIComponent(props.model)}`, s), [props.model]);
  const serving = useLoad(() => post<IndexEntry[]>('/v2/repository/index', {}), [props.model]);
  const [problem, setProblem] = useState<Error>();
  const [busy, setBusy] = useState(false);
  const v = model.data?.versions.find((x) => String(x.version) === props.version);
  const entries = (serving.data ?? []).filter((e) => e.name === props.model);
  const act = async (what: 'load' | 'unload') => {
    setBusy(true);
    setProblem(undefined);
    try {
      await post(`/v2/repository/models/${encodeURIComponent(props.model)}/${what}`, {});
      serving.reload();
    } catch (e) {
      setProblem(e as Error);
    } finally {
      setBusy(false);
    }
  };
  return (
    <div>
      <h1>
        <a href={href('models')}>Models</a> / <a href={href('models', props.model)}>{props.model}</a> / version {props.version}
      </h1>
      <Problem error={model.error ?? problem} />
      {model.data && !v && <div class="problem">{props.model} has no version {props.version}</div>}
      {v && (
        <>
          <p class="summary" data-testid="version-summary">
            stage {v.stage}
            {v.aliases.length > 0 && <> · aliases {v.aliases.join(', ')}</>} · created {time(v.creation_time)}
            {v.run_id && (
              <>
                {' '}
                · made by run <RunLink run={v.run_id} />
              </>
            )}
          </p>
          {v.description && <p>{v.description}</p>}
          <Section title="Serving">
            <table class="list" data-testid="serving">
              <tbody>
                {entries.length === 0 ? (
                  <tr>
                    <td class="muted">not known to the model server</td>
                  </tr>
                ) : (
                  entries.map((e) => (
                    <tr>
                      <td>version {e.version ?? '—'}</td>
                      <td data-testid="serving-state">{e.state}</td>
                      <td class="muted">{e.reason ?? ''}</td>
                      <td>{e.state === 'READY' && e.version && <Stats model={props.model} version={e.version} />}</td>
                    </tr>
                  ))
                )}
              </tbody>
            </table>
            <button type="button" disabled={busy} onClick={() => act('load')} data-testid="load">
              Load
            </button>{' '}
            <button type="button" disabled={busy} onClick={() => act('unload')} data-testid="unload">
              Unload
            </button>
          </Section>
          {v.run_id && <Reports run={v.run_id} compressed={!!v.tags['trainyard.compression.method']} />}
          <Layers model={props.model} version={props.version} />
          <Section title="Tags">
            <KeyValues values={v.tags} testid="version-tags" />
          </Section>
        </>
      )}
    </div>
  );
}

function RunLink(props: { run: string }) {
  const { data } = useLoad((s) => get<{ experiment_id: string; name: string }>(`/api/v1/runs/${encodeURIComponent(props.run)}`, s), [props.run]);
  return data ? <a href={href('experiments', data.experiment_id, 'runs', props.run)}>{data.name || props.run}</a> : <span>{props.run}</span>;
}

/** A JSON artifact of a run, or null when it has none (its folder is listed first, so an
 * absent file costs no failed request). */
async function artifact(run: string, path: string, signal?: AbortSignal): Promise<unknown | null> {
  const dir = path.includes('/') ? path.slice(0, path.lastIndexOf('/')) : '';
  const listed = await get<{ files?: { path: string; is_dir: boolean }[] }>(query('/api/2.0/mlflow/artifacts/list', { run_id: run, path: dir }), signal);
  if (!(listed.files ?? []).some((f) => f.path === path && !f.is_dir)) return null;
  const res = await request(query('/get-artifact', { run_uuid: run, path }), { signal });
  return res.json();
}

/** The version's evaluation report (confusion matrix, per-class scores) and, for a
 * compressed version, its compression report: parent and child side by side. */
function Reports(props: { run: string; compressed: boolean }) {
  const evalDoc = useLoad((s) => artifact(props.run, 'eval/report.json', s), [props.run]);
  const compression = useLoad((s) => (props.compressed ? artifact(props.run, 'compression/report.json', s) : Promise.resolve(null)), [props.run, props.compressed]);
  const report = reportOf(evalDoc.data);
  const c = compression.data as Record<string, any> | null;
  return (
    <>
      {report && (
        <Section title="Evaluation">
          <Confusion report={report} />
        </Section>
      )}
      {c && (
        <Section title="Compression">
          <table class="list" data-testid="compression-report">
            <thead>
              <tr>
                <th />
                <th>parent {c.parent}</th>
                <th>this version</th>
              </tr>
            </thead>
            <tbody>
              <tr>
                <th>method</th>
                <td />
                <td>{String(c.method ?? '')}</td>
              </tr>
              <tr>
                <th>size (bytes)</th>
                <td>{c.size_bytes?.parent}</td>
                <td>
                  {c.size_bytes?.child} ({number(c.size_ratio)}× smaller)
                </td>
              </tr>
              <tr>
                <th>parameters</th>
                <td>{c.parameters?.parent}</td>
                <td>{c.parameters?.child}</td>
              </tr>
              <tr>
                <th>{c.metric}</th>
                <td>{number(c.parent_eval?.[c.metric])}</td>
                <td>{number(c.child_eval?.[c.metric])}</td>
              </tr>
              {Object.entries((c.latency_ms ?? {}) as Record<string, any>).flatMap(([runtime, sides]) =>
                ['batch_1', 'batch_32'].map((b) => (
                  <tr>
                    <th>
                      {runtime} {b} p50 ms
                    </th>
                    <td>{number(sides?.parent?.[b]?.p50_ms)}</td>
                    <td>{number(sides?.child?.[b]?.p50_ms)}</td>
                  </tr>
                )),
              )}
              <tr>
                <th>kept in float</th>
                <td />
                <td>{(c.fell_back ?? []).join(', ')}</td>
              </tr>
            </tbody>
          </table>
        </Section>
      )}
    </>
  );
}

/** Versions as boxes, an arrow from each version to those made from it (`trainyard.source`,
 * `trainyard.teacher`); sources in other models are boxes of their own. */
function LineageGraph(props: { model: ModelView }) {
  const versions = [...props.model.versions].sort((a, b) => a.version - b.version);
  const edges: { from: string; to: string; kind: string }[] = [];
  const nodes = new Map<string, { label: string; link: string; lineage: string }>();
  for (const v of versions) {
    const id = `${props.model.name}:${v.version}`;
    nodes.set(id, { label: `v${v.version}`, link: href('models', props.model.name, 'versions', v.version), lineage: v.tags['trainyard.lineage'] ?? '' });
  }
  for (const v of versions) {
    const id = `${props.model.name}:${v.version}`;
    for (const [tag, kind] of [
      ['trainyard.source', v.tags['trainyard.lineage'] ?? 'from'],
      ['trainyard.teacher', 'teacher'],
    ]) {
      const from = v.tags[tag];
      if (!from) continue;
      if (!nodes.has(from)) {
        const [name, ver] = from.split(':');
        nodes.set(from, { label: from, link: ver ? href('models', name, 'versions', ver) : href('models', name), lineage: '' });
      }
      edges.push({ from, to: id, kind });
    }
  }
  if (edges.length === 0) return null;
  // Layers: a node's depth is one more than its source's.
  const depth = new Map<string, number>();
  const depthOf = (id: string, seen = new Set<string>()): number => {
    if (depth.has(id)) return depth.get(id)!;
    if (seen.has(id)) return 0;
    seen.add(id);
    const parents = edges.filter((e) => e.to === id).map((e) => depthOf(e.from, seen) + 1);
    const d = parents.length ? Math.max(...parents) : 0;
    depth.set(id, d);
    return d;
  };
  [...nodes.keys()].forEach((id) => depthOf(id));
  const columns = new Map<number, string[]>();
  for (const [id, d] of depth) columns.set(d, [...(columns.get(d) ?? []), id]);
  const W = 150;
  const H = 44;
  const at = new Map<string, { x: number; y: number }>();
  for (const [d, ids] of columns) ids.forEach((id, i) => at.set(id, { x: 10 + d * (W + 60), y: 10 + i * (H + 16) }));
  const width = 20 + (Math.max(...columns.keys()) + 1) * (W + 60);
  const height = 20 + Math.max(...[...columns.values()].map((c) => c.length)) * (H + 16);
  return (
    <Section title="Lineage">
      <svg class="lineage-graph" width={width} height={height} data-testid="lineage-graph">
        <defs>
          <marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="6" markerHeight="6" orient="auto-start-reverse">
            <path d="M 0 0 L 10 5 L 0 10 z" fill="#6b7280" />
          </marker>
        </defs>
        {edges.map((e) => {
          const a = at.get(e.from)!;
          const b = at.get(e.to)!;
          return (
            <g>
              <line x1={a.x + W} y1={a.y + H / 2} x2={b.x} y2={b.y + H / 2} stroke="#6b7280" marker-end="url(#arrow)" />
              <text x={(a.x + W + b.x) / 2} y={(a.y + b.y) / 2 + H / 2 - 4} font-size="11" text-anchor="middle" fill="#6b7280">
                {e.kind}
              </text>
            </g>
          );
        })}
        {[...nodes.entries()].map(([id, n]) => {
          const p = at.get(id)!;
          return (
            <a href={n.link}>
              <rect x={p.x} y={p.y} width={W} height={H} rx="4" fill="#eff6ff" stroke="#2563eb" />
              <text x={p.x + 8} y={p.y + 18} font-size="13" fill="#111827">
                {n.label}
              </text>
              <text x={p.x + 8} y={p.y + 34} font-size="11" fill="#6b7280">
                {n.lineage}
              </text>
            </a>
          );
        })}
      </svg>
    </Section>
  );
}

interface TensorInfo {
  name: string;
  shape: string[] | null;
  dtype: string | null;
}

interface LayerGraph {
  inputs: TensorInfo[];
  outputs: TensorInfo[];
  layers: { name: string; op: string; inputs: string[]; outputs: TensorInfo[]; parameters: number }[];
  parameters: number;
  truncated?: boolean;
  shapes_unknown?: string;
}

const shapeOf = (t?: TensorInfo) => (t?.shape ? `[${t.shape.join(', ')}]` : '?');

/** The version's ONNX graph as a column of layers: operator, name, output shape, weights;
 * a layer that reads something other than the layer above it says where from (a skip
 * connection, a branch). */
function Layers(props: { model: string; version: string }) {
  const g = useLoad((s) => get<LayerGraph>(`/api/v1/models/${encodeURIComponent(props.model)}/versions/${encodeURIComponent(props.version)}/graph`, s), [props.model, props.version]);
  const [open, setOpen] = useState(false);
  if (g.error) {
    return (
      <Section title="Layers">
        <Problem error={g.error} />
      </Section>
    );
  }
  const d = g.data;
  if (!d) return null;
  const producer = new Map<string, string>();
  d.layers.forEach((l) => l.outputs.forEach((o) => producer.set(o.name, l.name)));
  const shown = open ? d.layers : d.layers.slice(0, 60);
  return (
    <Section title={`Layers (${d.layers.length}, ${d.parameters.toLocaleString('en')} weights)`}>
      {d.shapes_unknown && <p class="muted small">shapes unknown: {d.shapes_unknown}</p>}
      {d.truncated && <p class="muted small">the graph is larger: its first {d.layers.length.toLocaleString('en')} nodes are shown</p>}
      <div class="layers" data-testid="layers">
        {d.inputs.map((i) => (
          <div class="layer io">
            input <b>{i.name}</b> {shapeOf(i)} {i.dtype ?? ''}
          </div>
        ))}
        {shown.map((l, k) => {
          const previous = k > 0 ? shown[k - 1].outputs.map((o) => o.name) : d.inputs.map((i) => i.name);
          const elsewhere = l.inputs.filter((x) => !previous.includes(x)).map((x) => producer.get(x) ?? x);
          return (
            <div class="layer" data-op={l.op}>
              <span class="op">{l.op}</span> <span class="muted small">{l.name}</span> → {shapeOf(l.outputs[0])}
              {l.parameters > 0 && <span class="muted small"> · {l.parameters.toLocaleString('en')} weights</span>}
              {elsewhere.length > 0 && <div class="muted small">also reads {elsewhere.join(', ')}</div>}
            </div>
          );
        })}
        {d.layers.length > shown.length && (
          <button type="button" onClick={() => setOpen(true)}>
            show all {d.layers.length} layers
          </button>
        )}
        {d.outputs.map((o) => (
          <div class="layer io">
            output <b>{o.name}</b> {shapeOf(o)}
          </div>
        ))}
      </div>
    </Section>
  );
}

/** A loaded version's memory and latency (the Open Inference Protocol's statistics). */
function Stats(props: { model: string; version: string }) {
  const { data } = useLoad(
    (s) =>
      get<{ model_stats: { inference_count: number; inference_stats: { success: { count: number; ns: number } }; memory_usage: { byte_size: number }[] }[] }>(
        `/v2/models/${encodeURIComponent(props.model)}/versions/${encodeURIComponent(props.version)}/stats`,
        s,
      ),
    [props.model, props.version],
    5000,
  );
  const m = data?.model_stats?.[0];
  if (!m) return null;
  const ok = m.inference_stats.success;
  const memory = m.memory_usage.reduce((a, u) => a + u.byte_size, 0);
  return (
    <span class="small" data-testid="serving-stats">
      {memory > 0 && <>{(memory / 1024 / 1024).toFixed(1)} MiB · </>}
      {m.inference_count.toLocaleString('en')} inferences
      {ok.count > 0 && <> · mean {(ok.ns / ok.count / 1e6).toFixed(2)} ms</>}
    </span>
  );
}
