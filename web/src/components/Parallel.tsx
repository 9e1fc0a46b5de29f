// Parallel coordinates on a canvas: one vertical axis per dimension (numbers scaled to
// their range, categories spread evenly), one line per row, coloured by the last axis (the
// metric) from blue (low) to red (high). Thousands of lines draw in a few milliseconds.
import { useEffect, useRef } from 'preact/hooks';

export interface Row {
  values: (number | string | null)[];
  /** Drawn fainter, e.g. a pruned trial. */
  faint?: boolean;
}

interface Axis {
  title: string;
  categories?: string[];
  min: number;
  max: number;
}

function axes(titles: string[], rows: Row[]): Axis[] {
  return titles.map((title, i) => {
    const vs = rows.map((r) => r.values[i]).filter((v) => v !== null && v !== undefined);
    if (vs.some((v) => typeof v === 'string')) {
      const categories = Array.from(new Set(vs.map(String))).sort();
      return { title, categories, min: 0, max: Math.max(1, categories.length - 1) };
    }
    const ns = vs as number[];
    const min = Math.min(...ns);
    const max = Math.max(...ns);
    return { title, min: Number.isFinite(min) ? min : 0, max: Number.isFinite(max) && max > min ? max : min + 1 };
  });
}

function position(a: Axis, v: number | string | null): number | null {
  if (v === null || v === undefined) return null;
  if (a.categories) {
    const i = a.categories.indexOf(String(v));
    return a.categories.length === 1 ? 0.5 : i / (a.categories.length - 1);
  }
  return (Number(v) - a.min) / (a.max - a.min);
}

function colour(t: number): string {
  const h = 240 - 240 * Math.min(1, Math.max(0, t));
  return `hsla(${h}, 80%, 45%, 0.55)`;
}

export function Parallel(props: { titles: string[]; rows: Row[]; height?: number; testid?: string }) {
  const canvas = useRef<HTMLCanvasElement>(null);
  useEffect(() => {
    const c = canvas.current;
    if (!c) return;
    const width = Math.max(400, c.parentElement?.clientWidth ?? 800);
    const height = props.height ?? 320;
    const dpr = window.devicePixelRatio || 1;
    c.width = width * dpr;
    c.height = height * dpr;
    c.style.width = `${width}px`;
    c.style.height = `${height}px`;
    const g = c.getContext('2d')!;
    g.scale(dpr, dpr);
    g.clearRect(0, 0, width, height);
    const as = axes(props.titles, props.rows);
    if (as.length === 0) return;
    const left = 60;
    const right = 60;
    const top = 28;
    const bottom = 24;
    const x = (i: number) => (as.length === 1 ? width / 2 : left + (i * (width - left - right)) / (as.length - 1));
    const y = (t: number) => top + (1 - t) * (height - top - bottom);
    const last = as.length - 1;
    g.lineWidth = 1;
    for (const r of props.rows) {
      const t = position(as[last], r.values[last]);
      g.strokeStyle = r.faint ? 'rgba(120,120,120,0.25)' : colour(t ?? 0);
      g.beginPath();
      let drawing = false;
      as.forEach((a, i) => {
        const p = position(a, r.values[i]);
        if (p === null) {
          drawing = false;
          return;
        }
        if (drawing) g.lineTo(x(i), y(p));
        else g.moveTo(x(i), y(p));
        drawing = true;
      });
      g.stroke();
    }
    g.fillStyle = '#111827';
    g.strokeStyle = '#6b7280';
    g.font = '12px system-ui, sans-serif';
    g.textAlign = 'center';
    as.forEach((a, i) => {
      g.beginPath();
      g.moveTo(x(i), y(0));
      g.lineTo(x(i), y(1));
      g.stroke();
      g.fillText(a.title, x(i), 14);
      const label = (v: number | string) => (typeof v === 'number' ? Number(v.toPrecision(4)).toString() : v);
      if (a.categories) {
        a.categories.forEach((cat) => g.fillText(label(cat), x(i), y(position(a, cat)!) - 3));
      } else {
        g.fillText(label(a.max), x(i), y(1) - 4);
        g.fillText(label(a.min), x(i), y(0) + 14);
      }
    });
  }, [props.titles, props.rows, props.height]);
  return (
    <div class="parallel" data-testid={props.testid}>
      <canvas ref={canvas} />
    </div>
  );
}
