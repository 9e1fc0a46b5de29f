// Datasets: every name with its latest version; a dataset's versions, each with its schema,
// statistics (class histograms drawn as bars), lineage (parent, source, processing steps)
// and its first rows (tensors of image shape drawn as images).
import { useState } from 'preact/hooks';
import { get, query } from '../api';
import { KeyValues, Problem, Section } from '../components/Status';
import { bytes, number, time } from '../format';
import { useLoad } from '../hooks';
import { imageOf } from '../images';
import { href } from '../router';

interface Field {
  name: string;
  type: string;
  shape?: number[];
}

interface Stats {
  count: number;
  min?: number | null;
  max?: number | null;
  mean?: number | null;
  std?: number | null;
  distinct?: number | null;
  histogram?: Record<string, number> | null;
}

interface Manifest {
  schema: Field[];
  rows: number;
  shards: { sha256: string; rows: number; bytes: number }[];
  stats: Record<string, Stats>;
  lineage: { parent?: string | null; source?: string | null; steps: Record<string, unknown>[] };
}

interface Version {
  name: string;
  version: string;
  created_ms: number;
  rows: number;
  bytes: number;
  parent: string | null;
  manifest: Manifest;
}

interface Head {
  columns: Field[];
  rows: Record<string, unknown>[];
}

export function Datasets() {
  const { data, error } = useLoad((s) => get<{ datasets: { name: string; versions: number; latest: Version }[] }>('/api/v1/datasets', s), []);
  return (
    <div>
      <h1>Datasets</h1>
      <Problem error={error} />
      <table class="list" data-testid="datasets">
        <thead>
          <tr>
            <th>Name</th>
            <th>Versions</th>
            <th>Latest</th>
            <th>Rows</th>
            <th>Size</th>
            <th>Created</th>
          </tr>
        </thead>
        <tbody>
          {data?.datasets.map((d) => (
            <tr>
              <td>
                <a href={href('datasets', d.name)}>{d.name}</a>
              </td>
              <td>{d.versions}</td>
              <td class="mono">{d.latest.version.slice(0, 12)}</td>
              <td>{d.latest.rows.toLocaleString('en')}</td>
              <td>{bytes(d.latest.bytes)}</td>
              <td>{time(d.latest.created_ms)}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

export function Dataset(props: { dataset: string }) {
  const { data, error } = useLoad((s) => get<{ versions: Version[] }>(`/api/v1/datasets/${encodeURIComponent(props.dataset)}`, s), [props.dataset]);
  const [chosen, setChosen] = useState<string | null>(null);
  const versions = data?.versions ?? [];
  const v = versions.find((x) => x.version === chosen) ?? versions[0];
  return (
    <div>
      <h1>
        <a href={href('datasets')}>Datasets</a> / {props.dataset}
      </h1>
      <Problem error={error} />
      <table class="list" data-testid="dataset-versions">
        <thead>
          <tr>
            <th>Version</th>
            <th>Rows</th>
            <th>Size</th>
            <th>From</th>
            <th>Created</th>
          </tr>
        </thead>
        <tbody>
          {versions.map((x) => (
            <tr class={x === v ? 'chosen' : ''}>
              <td class="mono">
                <a onClick={() => setChosen(x.version)}>{x.version.slice(0, 12)}</a>
              </td>
              <td>{x.rows.toLocaleString('en')}</td>
              <td>{bytes(x.bytes)}</td>
              <td class="mono">{x.parent ? x.parent.slice(0, 12) : x.manifest.lineage.source ?? ''}</td>
              <td>{time(x.created_ms)}</td>
            </tr>
          ))}
        </tbody>
      </table>
      {v && <VersionDetail v={v} />}
    </div>
  );
}

function typeOf(f: Field): string {
  return f.type === 'float32' && f.shape && f.shape.length > 0 ? `float32[${f.shape.join(', ')}]` : f.type;
}

function VersionDetail(props: { v: Version }) {
  const m = props.v.manifest;
  return (
    <>
      <Section title={`Version ${props.v.version.slice(0, 12)}`}>
        <table class="list" data-testid="schema">
          <thead>
            <tr>
              <th>Column</th>
              <th>Type</th>
              <th>min</th>
              <th>max</th>
              <th>mean</th>
              <th>std</th>
              <th>distinct</th>
              <th>histogram</th>
            </tr>
          </thead>
          <tbody>
            {m.schema.map((f) => {
              const s = m.stats[f.name];
              return (
                <tr>
                  <th>{f.name}</th>
                  <td class="mono">{typeOf(f)}</td>
                  <td>{number(s?.min)}</td>
                  <td>{number(s?.max)}</td>
                  <td>{number(s?.mean)}</td>
                  <td>{number(s?.std)}</td>
                  <td>{s?.distinct ?? ''}</td>
                  <td>{s?.histogram && <Histogram counts={s.histogram} />}</td>
                </tr>
              );
            })}
          </tbody>
        </table>
      </Section>
      <Section title="Lineage">
        <KeyValues
          values={Object.fromEntries(
            [
              ['source', m.lineage.source ?? ''],
              ['parent', m.lineage.parent ?? ''],
              ...m.lineage.steps.map((s, i): [string, string] => [`step ${i + 1}`, JSON.stringify(s)]),
            ].filter(([, x]) => x),
          )}
          testid="lineage-steps"
        />
      </Section>
      <HeadRows v={props.v} />
    </>
  );
}

function Histogram(props: { counts: Record<string, number> }) {
  const entries = Object.entries(props.counts).sort((a, b) => (isNaN(Number(a[0])) ? a[0].localeCompare(b[0]) : Number(a[0]) - Number(b[0])));
  const shown = entries.slice(0, 40);
  const max = Math.max(...shown.map(([, n]) => n), 1);
  return (
    <div class="histogram" data-testid="histogram" title={entries.map(([k, n]) => `${k}: ${n}`).join('\n')}>
      {shown.map(([k, n]) => (
        <div class="hbar" style={{ height: `${Math.max(2, (40 * n) / max)}px` }} title={`${k}: ${n}`} />
      ))}
      {entries.length > shown.length && <span class="muted small"> +{entries.length - shown.length}</span>}
    </div>
  );
}

function HeadRows(props: { v: Version }) {
  const head = useLoad(
    (s) => get<Head>(query(`/api/v1/datasets/${encodeURIComponent(props.v.name)}/versions/${props.v.version}/head`, { rows: 20 }), s),
    [props.v.version],
  );
  const h = head.data;
  return (
    <Section title="First rows">
      <Problem error={head.error} />
      {h && (
        <table class="list" data-testid="head">
          <thead>
            <tr>
              {h.columns.map((c) => (
                <th>{c.name}</th>
              ))}
            </tr>
          </thead>
          <tbody>
            {h.rows.map((r) => (
              <tr>
                {h.columns.map((c) => (
                  <td>
                    <Cell field={c} value={r[c.name]} />
                  </td>
                ))}
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </Section>
  );
}

function Cell(props: { field: Field; value: unknown }) {
  const f = props.field;
  const v = props.value;
  if (f.type === 'bytes' && typeof v === 'string') {
    return <img class="thumb" src={`data:image/*;base64,${v}`} alt="" />;
  }
  if (Array.isArray(v)) {
    const src = imageOf(v as number[], f.shape ?? []);
    if (src) return <img class="thumb" src={src} alt="" />;
    const shown = (v as number[]).slice(0, 8).map((x) => number(x));
    return <span class="mono small">[{shown.join(', ')}{v.length > 8 ? ', …' : ''}]</span>;
  }
  return <span>{v === null || v === undefined ? '' : String(v)}</span>;
}
