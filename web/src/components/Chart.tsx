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

/** Series merged onto one sorted x axis (uPlot's data layout), gaps as null. */
function align(series: Series[]): uPlot.AlignedData {
  if (series.length === 1) return [series[0].x, series[0].y] as uPlot.AlignedData;
  const xs = Array.from(new Set(series.flatMap((s) => s.x))).sort((a, b) => a - b);
  const at = new Map(xs.map((x, i) => [x, i]));
  const ys = series.map((s) => {
    const y: (number | null)[] = new Array(xs.length).fill(null);
    s.x.forEach((x, i) => (y[at.get(x)!] = s.y[i]));
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
