// A metric chart on a canvas (uPlot): many series of up to tens of thousands of points each
// draw in milliseconds. The server already downsamples long histories keeping every
// bucket's extremes, so spikes survive.
import { useEffect, useRef } from 'preact/hooks';
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';

export interface Series {
  label: string;
  x: number[];
  y: (number | null)[];
}

const COLORS = ['#2563eb', '#dc2626', '#16a34a', '#9333ea', '#ea580c', '#0891b2', '#4b5563', '#ca8a04'];

/** Most x positions an overlay of many series is drawn on: their union can be every step
 * of every run (downsampled runs keep each bucket's extremes at their own steps), and uPlot
 * wants every series on one x axis, so the cost is series × positions. */
const OVERLAY_POSITIONS = 4000;

/** Series merged onto one sorted x axis (uPlot's data layout), gaps as null. When the union
 * of x values is larger than [`OVERLAY_POSITIONS`], each x is snapped to the nearest of that
 * many evenly spaced positions (a step of range / 4000: invisible at chart width), keeping
 * the largest magnitude where two points of one series meet, so spikes stay. */
function align(series: Series[]): uPlot.AlignedData {
  if (series.length === 1) return [series[0].x, series[0].y] as uPlot.AlignedData;
  let xs = Array.from(new Set(series.flatMap((s) => s.x))).sort((a, b) => a - b);
  let place: (x: number) => number;
  if (xs.length > OVERLAY_POSITIONS) {
    const lo = xs[0];
    const width = (xs[xs.length - 1] - lo) / (OVERLAY_POSITIONS - 1) || 1;
    xs = Array.from({ length: OVERLAY_POSITIONS }, (_, i) => lo + i * width);
    place = (x) => Math.round((x - lo) / width);
  } else {
    const at = new Map(xs.map((x, i) => [x, i]));
    place = (x) => at.get(x)!;
  }
  const ys = series.map((s) => {
    const y: (number | null)[] = new Array(xs.length).fill(null);
    s.x.forEach((x, i) => {
      const k = place(x);
      const v = s.y[i];
      const old = y[k];
      if (old === null || (v !== null && Math.abs(v) > Math.abs(old))) y[k] = v;
    });
    return y;
  });
  return [xs, ...ys] as uPlot.AlignedData;
}

/** Exponential moving average (TensorBoard's smoothing, debiased), 0 = none. */
export function smooth(y: (number | null)[], weight: number): (number | null)[] {
  if (weight <= 0) return y;
  let last = 0;
  let n = 0;
  return y.map((v) => {
    if (v === null || !Number.isFinite(v)) return v;
    last = last * weight + (1 - weight) * v;
    n++;
    return last / (1 - Math.pow(weight, n));
  });
}

export function Chart(props: { title: string; series: Series[]; log?: boolean; xLabel?: string; time?: boolean; height?: number }) {
  const box = useRef<HTMLDivElement>(null);
  useEffect(() => {
    const el = box.current;
    if (!el) return;
    const width = Math.max(300, el.clientWidth || 600);
    const plot = new uPlot(
      {
        title: props.title,
        width,
        height: props.height ?? 260,
        scales: { x: { time: !!props.time }, y: { distr: props.log ? 3 : 1 } },
        axes: [{ label: props.xLabel }, {}],
        legend: { show: props.series.length <= 12 },
        cursor: { drag: { x: true, y: false } },
        series: [
          {},
          ...props.series.map((s, i) => ({
            label: s.label,
            stroke: COLORS[i % COLORS.length],
            width: 1.25,
            points: { show: false },
            spanGaps: true,
          })),
        ],
      },
      align(props.series),
      el,
    );
    const resize = () => plot.setSize({ width: Math.max(300, el.clientWidth), height: props.height ?? 260 });
    window.addEventListener('resize', resize);
    return () => {
      window.removeEventListener('resize', resize);
      plot.destroy();
    };
  }, [props.series, props.log, props.time, props.title]);
  return <div class="chart" ref={box} data-testid={`chart-${props.title}`} />;
}
