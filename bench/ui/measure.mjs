// Times the web UI in Debian's Chromium (playwright-core) against a seeded server, and the
// MLflow UI on the same data when MLFLOW_URL is given. Prints one JSON object.
//
// Environment: TRAINYARD_URL, TRAINYARD_TOKEN, SEED (seed.py's JSON for Trainyard),
// MLFLOW_URL and MLFLOW_SEED (optional), CHROMIUM, REPEAT (default 3), SHOTS (folder).
import { mkdirSync } from 'node:fs';
import { createRequire } from 'node:module';

const require = createRequire(new URL('../../web/package.json', import.meta.url));
const { chromium } = require('playwright-core');

const base = process.env.TRAINYARD_URL;
const token = process.env.TRAINYARD_TOKEN;
const seed = JSON.parse(process.env.SEED);
const repeat = Number(process.env.REPEAT ?? 3);
const shots = process.env.SHOTS ?? 'bench/ui/results';
mkdirSync(shots, { recursive: true });
const ROW = 28;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'],
});

/** A fresh context: empty cache, the token already in localStorage. */
async function fresh(viewport = { width: 1400, height: 900 }) {
  const context = await browser.newContext({ viewport });
  await context.addInitScript((t) => {
    if (t) localStorage.setItem('trainyard.token', t);
  }, token);
  const page = await context.newPage();
  page.setDefaultTimeout(600_000);
  return { context, page };
}

/** performance.now() (ms since navigation started) when `predicate` first holds. */
async function when(page, predicate, arg, timeout = 600_000) {
  const handle = await page.waitForFunction(predicate, arg, { polling: 'raf', timeout });
  return handle.jsonValue();
}
const log = (m) => console.error(`[measure] ${m}`);

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const summary = (xs) => ({ median_ms: Math.round(median(xs)), min_ms: Math.round(Math.min(...xs)), max_ms: Math.round(Math.max(...xs)), runs: xs.map(Math.round) });

const out = { trainyard: {}, mlflow: null };
log(`runs table of ${seed.runs} runs`);

// 1. Runs table: first rows from a cold start, all rows loaded, then a jump to row 90,000.
{
  const first = [];
  const all = [];
  const scroll = [];
  let bundle = null;
  for (let i = 0; i < repeat; i++) {
    const { context, page } = await fresh();
    await page.goto(`${base}/#/experiments/${seed.runs_experiment}`);
    first.push(await when(page, () => document.querySelector('[data-testid=runs] [data-row="0"]') && performance.now()));
    if (i === 0) {
      bundle = await page.evaluate(() =>
        performance
          .getEntriesByType('resource')
          .concat(performance.getEntriesByType('navigation'))
          .filter((e) => /\/assets\/|\/$|index\.html/.test(e.name))
          .map((e) => ({ name: e.name.replace(location.origin, ''), transfer: e.transferSize, encoded: e.encodedBodySize, decoded: e.decodedBodySize })),
      );
    }
    all.push(await when(page, (n) => document.querySelector('[data-testid=runs]')?.getAttribute('data-rows') === String(n) && performance.now(), seed.runs));
    const target = Math.min(90_000, seed.runs - 1);
    scroll.push(
      await page.evaluate(async ({ target, ROW }) => {
        const el = document.querySelector('[data-testid=runs]');
        const t = performance.now();
        el.scrollTop = target * ROW;
        await new Promise((r) => {
          const f = () => (document.querySelector(`[data-row="${target}"]`) ? r() : requestAnimationFrame(f));
          f();
        });
        await new Promise((r) => requestAnimationFrame(() => r()));
        return performance.now() - t;
      }, { target, ROW }),
    );
    if (i === 0) await page.screenshot({ path: `${shots}/runs-${seed.runs}.png` });
    await context.close();
  }
  out.trainyard.runs_table = { runs: seed.runs, first_rows: summary(first), all_rows_loaded: summary(all), scroll_to_row_90000: summary(scroll), cold_load_files: bundle };
}

// 2. A 10,000,000-point metric drawn (the run page, from navigation).
log(`a ${seed.long_points}-point metric`);
{
  const drawn = [];
  for (let i = 0; i < repeat; i++) {
    const { context, page } = await fresh();
    await page.goto(`${base}/#/experiments/${seed.long_experiment}/runs/${seed.long_run}`);
    drawn.push(await when(page, () => document.querySelector('[data-testid="chart-loss"] canvas') && performance.now()));
    if (i === 0) await page.screenshot({ path: `${shots}/long-metric.png` });
    await context.close();
  }
  out.trainyard.long_metric = { points: seed.long_points, drawn: summary(drawn) };
}

// 3. 100 runs × 10,000 steps overlaid (the compare page, from navigation).
log(`${seed.overlay_runs.length} runs × ${seed.overlay_steps} steps overlaid`);
{
  const drawn = [];
  const ids = seed.overlay_runs.join(',');
  for (let i = 0; i < repeat; i++) {
    const { context, page } = await fresh();
    await page.goto(`${base}/#/compare?runs=${ids}`);
    drawn.push(
      await when(
        page,
        (n) => (document.querySelector('[data-testid=compare-points]')?.textContent ?? '').startsWith(`${n} curves`) && document.querySelector('[data-testid="chart-loss"] canvas') && performance.now(),
        seed.overlay_runs.length,
      ),
    );
    if (i === 0) await page.screenshot({ path: `${shots}/overlay.png` });
    await context.close();
  }
  out.trainyard.overlay = { runs: seed.overlay_runs.length, steps: seed.overlay_steps, drawn: summary(drawn) };
}

// The MLflow UI (3.x) on the same data, where it manages: its runs page in "Model training"
// mode, a run's "Model metrics" tab, and the experiment's chart view. Each wait is bounded;
// what MLflow drew by then is recorded.
if (process.env.MLFLOW_URL) {
  const m = process.env.MLFLOW_URL;
  const ms = JSON.parse(process.env.MLFLOW_SEED);
  const mlflow = {};
  const LIMIT = 180_000;
  const attempt = async (name, body) => {
    log(`MLflow: ${name}`);
    try {
      mlflow[name] = await body();
    } catch (e) {
      mlflow[name] = { error: e.message.split('\n')[0] };
    }
  };
  const traces = () => document.querySelectorAll('.js-plotly-plot .scatterlayer path.js-line').length;
  await attempt('runs_table', async () => {
    const first = [];
    for (let i = 0; i < repeat; i++) {
      const { context, page } = await fresh();
      await page.goto(`${m}/#/experiments/${ms.runs_experiment}/runs?workflowType=machine_learning`);
      first.push(await when(page, () => [...document.querySelectorAll('a')].some((a) => /run-\d{6}/.test(a.textContent ?? '')) && performance.now(), undefined, LIMIT));
      if (i === 0) await page.screenshot({ path: `${shots}/mlflow-runs.png` });
      await context.close();
    }
    return { runs: ms.runs, first_rows: summary(first), note: 'MLflow pages its runs table (Load more, 100 at a time): row 90,000 is hundreds of clicks away, so no scroll figure' };
  });
  await attempt('long_metric', async () => {
    const drawn = [];
    for (let i = 0; i < repeat; i++) {
      const { context, page } = await fresh();
      await page.goto(`${m}/#/experiments/${ms.long_experiment}/runs/${ms.long_run}/model-metrics`);
      drawn.push(await when(page, (f) => new Function(`return (${f})()`)() > 0 && performance.now(), traces.toString(), LIMIT));
      if (i === 0) await page.screenshot({ path: `${shots}/mlflow-long-metric.png` });
      await context.close();
    }
    return { points: ms.long_points, drawn: summary(drawn) };
  });
  await attempt('overlay', async () => {
    const drawn = [];
    let lines = 0;
    for (let i = 0; i < repeat; i++) {
      const { context, page } = await fresh();
      await page.goto(`${m}/#/experiments/${ms.overlay_experiment}/runs?workflowType=machine_learning&compareRunsMode=CHART`);
      // The chart view draws the runs it shows: wait for its first line, then until the
      // count stops growing for 3 s (MLflow shows only some runs in charts by default).
      const first = await when(page, (f) => new Function(`return (${f})()`)() > 0 && performance.now(), traces.toString(), LIMIT);
      let last = -1;
      let stableSince = Date.now();
      let at = first;
      while (Date.now() - stableSince < 3000) {
        const [n, now] = await page.evaluate((f) => [new Function(`return (${f})()`)(), performance.now()], traces.toString());
        if (n !== last) {
          last = n;
          at = now;
          stableSince = Date.now();
        }
        await page.waitForTimeout(100);
      }
      lines = last;
      drawn.push(at);
      if (i === 0) await page.screenshot({ path: `${shots}/mlflow-overlay.png` });
      await context.close();
    }
    return { runs: ms.overlay_runs.length, steps: ms.overlay_steps, plotly_lines_drawn: lines, drawn: summary(drawn) };
  });
  out.mlflow = mlflow;
}

await browser.close();
console.log(JSON.stringify(out, null, 2));
