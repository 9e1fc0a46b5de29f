// An evaluation report of the built-in engine (`eval/report.json`): the confusion matrix as
// a heat map (rows actual, columns predicted) and the per-class scores; for regression, its
// scalar metrics.
import { number } from '../format';
import { imageOf } from '../images';

export interface ClassScores {
  class: number;
  precision: number;
  recall: number;
  f1: number;
  support: number;
}

export interface WorstRow {
  row: number;
  target: number;
  predicted: number;
  loss: number;
  target_probability: number;
  input?: number[];
  shape: number[];
}

export interface EvalReport {
  task: 'classification' | 'regression';
  worst?: WorstRow[];
  rows?: number;
  accuracy?: number;
  confusion?: number[][];
  per_class?: ClassScores[];
  [k: string]: unknown;
}

/** The report inside either shape the tasks write (`{report: …}` from `eval`, bare from `train`). */
export function reportOf(doc: unknown): EvalReport | null {
  const d = doc as { report?: EvalReport; task?: string };
  if (d && typeof d === 'object' && d.report && typeof d.report === 'object') return d.report;
  if (d && typeof d === 'object' && typeof d.task === 'string') return d as EvalReport;
  return null;
}

export function Confusion(props: { report: EvalReport }) {
  const r = props.report;
  const scalars = Object.entries(r).filter(([, v]) => typeof v === 'number') as [string, number][];
  return (
    <div class="columns">
      <div>
        <table class="kv" data-testid="eval-scalars">
          <tbody>
            {scalars.map(([k, v]) => (
              <tr>
                <th>{k}</th>
                <td>{number(v)}</td>
              </tr>
            ))}
          </tbody>
        </table>
        {r.per_class && (
          <table class="list" data-testid="per-class">
            <thead>
              <tr>
                <th>class</th>
                <th>precision</th>
                <th>recall</th>
                <th>f1</th>
                <th>support</th>
              </tr>
            </thead>
            <tbody>
              {r.per_class.map((c) => (
                <tr>
                  <td>{c.class}</td>
                  <td>{number(c.precision)}</td>
                  <td>{number(c.recall)}</td>
                  <td>{number(c.f1)}</td>
                  <td>{c.support}</td>
                </tr>
              ))}
            </tbody>
          </table>
        )}
      </div>
      <div>
        {r.confusion && <Matrix confusion={r.confusion} />}
        {r.worst && r.worst.length > 0 && <Worst rows={r.worst} />}
      </div>
    </div>
  );
}

/** The evaluation rows the model got most wrong, pictures for image inputs. */
function Worst(props: { rows: WorstRow[] }) {
  return (
    <div>
      <h3>Rows with the highest loss</h3>
      <div class="worst" data-testid="worst-rows">
        {props.rows.map((w) => {
          const src = w.input ? imageOf(w.input, w.shape) : null;
          return (
            <figure class="worst-row">
              {src ? <img class="thumb" src={src} alt={`row ${w.row}`} /> : <span class="mono small">{w.input ? `[${w.input.slice(0, 6).map(number).join(', ')}, …]` : ''}</span>}
              <figcaption class="small">
                row {w.row}: {w.target} → <b>{w.predicted}</b>
                <br />
                p(true) {number(w.target_probability)} · loss {number(w.loss)}
              </figcaption>
            </figure>
          );
        })}
      </div>
    </div>
  );
}

function Matrix(props: { confusion: number[][] }) {
  const m = props.confusion;
  const max = Math.max(1, ...m.flat());
  return (
    <table class="confusion" data-testid="confusion">
      <thead>
        <tr>
          <th class="muted small">actual ↓ predicted →</th>
          {m.map((_, j) => (
            <th>{j}</th>
          ))}
        </tr>
      </thead>
      <tbody>
        {m.map((row, i) => (
          <tr>
            <th>{i}</th>
            {row.map((n, j) => {
              const t = Math.sqrt(n / max);
              const bg = i === j ? `rgba(22,163,74,${t})` : `rgba(220,38,38,${t})`;
              return (
                <td style={{ background: bg, color: t > 0.6 ? '#fff' : undefined }} title={`actual ${i}, predicted ${j}: ${n}`}>
                  {n || ''}
                </td>
              );
            })}
          </tr>
        ))}
      </tbody>
    </table>
  );
}
