// Registered models, their versions (aliases, stage, lineage, compression reports side by
// side) and serving state with load/unload through the Open Inference Protocol.
import { useState } from 'preact/hooks';
import { get, post, type Model as ModelView, type ModelVersion } from '../api';
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
