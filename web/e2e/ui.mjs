// End-to-end check of the web UI in a real Chromium (Debian's package, driven by
// playwright-core) against a running Trainyard that crates/cli/tests/ui.rs seeded.
// Input (environment): TRAINYARD_URL, TRAINYARD_TOKEN, CHROMIUM, SCREENSHOTS (a folder),
// SEED (JSON: what the seed made). Prints one line per check; exits 1 on the first failure
// or on any console error.
import { mkdirSync } from 'node:fs';
import { chromium } from 'playwright-core';

const base = process.env.TRAINYARD_URL;
const token = process.env.TRAINYARD_TOKEN;
const seed = JSON.parse(process.env.SEED ?? '{}');
const shots = process.env.SCREENSHOTS ?? 'ui-screenshots';
mkdirSync(shots, { recursive: true });

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'],
});
const context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
const page = await context.newPage();
page.setDefaultTimeout(20_000);
const problems = [];
page.on('console', (m) => m.type() === 'error' && problems.push(`console: ${m.text()}`));
page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));

let step = 0;
async function check(name, body) {
  step++;
  const started = Date.now();
  try {
    await body();
  } catch (e) {
    await page.screenshot({ path: `${shots}/failed-${step}.png`, fullPage: true }).catch(() => {});
    console.log(`FAIL ${name}: ${e.message.split('\n')[0]}`);
    console.log((await page.content()).slice(0, 4000));
    await browser.close();
    process.exit(1);
  }
  if (problems.length) {
    console.log(`FAIL ${name}: ${problems.join('; ')}`);
    await browser.close();
    process.exit(1);
  }
  console.log(`ok ${name} (${Date.now() - started} ms)`);
}
const shot = (name) => page.screenshot({ path: `${shots}/${name}.png`, fullPage: true });
const text = (sel) => page.locator(sel).first().innerText();
const until = async (what, f, ms = 20_000) => {
  const end = Date.now() + ms;
  for (;;) {
    if (await f()) return;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await page.waitForTimeout(200);
  }
};

await check('signing in with a wrong token is refused, with the right one it lands on experiments', async () => {
  await page.goto(base + '/');
  await page.fill('input[name=token]', 'not-a-token');
  await page.click('button[type=submit]');
  await page.locator('.problem').waitFor();
  problems.length = 0; // the refused call's 401 is logged by the browser: expected here
  await page.fill('input[name=token]', token);
  await page.click('button[type=submit]');
  await page.locator('[data-testid=experiments]').getByText(seed.experiment_name).waitFor();
  await shot('experiments');
});

await check('the runs table lists every run and scrolls virtually', async () => {
  await page.locator(`a:text-is("${seed.experiment_name}")`).click();
  await until('every run loaded', async () => (await page.getAttribute('[data-testid=runs]', 'data-rows')) === String(seed.runs));
  const rendered = await page.locator('[data-testid=runs] .vtable-row').count();
  if (rendered >= seed.runs) throw new Error(`${rendered} rows in the DOM for ${seed.runs} runs: not virtual`);
  await page.locator('[data-testid=runs]').evaluate((el) => (el.scrollTop = el.scrollHeight));
  await page.locator(`[data-testid=runs] [data-row="${seed.runs - 1}"]`).waitFor();
  await page.locator('[data-testid=runs]').evaluate((el) => (el.scrollTop = 0));
  await shot('runs');
});

await check('grouping by a param summarises each value', async () => {
  await page.selectOption('select[name=group]', 'lr');
  await until('two groups', async () => (await page.locator('[data-testid=groups] tbody tr').count()) === 2);
  const first = await page.locator('[data-testid=groups] tbody tr').first().innerText();
  if (!first.includes(String(seed.runs / 2))) throw new Error(`group row: ${first}`);
  await shot('runs-grouped');
  await page.selectOption('select[name=group]', '');
});

await check('a filter in the MLflow grammar narrows the runs', async () => {
  await page.fill('input[name=filter]', seed.filter);
  await page.click('button:text-is("Filter")');
  await until('filtered rows', async () => (await page.getAttribute('[data-testid=runs]', 'data-rows')) === String(seed.filtered));
  await page.fill('input[name=filter]', 'params.nope = = 1');
  await page.click('button:text-is("Filter")');
  await page.locator('.problem').waitFor();
  problems.length = 0; // the 400 of the bad filter, shown to the user
  await shot('runs-filter-error');
});

await check('two chosen runs and the first 300 are compared: curves, parallel coordinates, differing params', async () => {
  await page.fill('input[name=filter]', '');
  await page.click('button:text-is("Filter")');
  await until('every run again', async () => (await page.getAttribute('[data-testid=runs]', 'data-rows')) === String(seed.runs));
  await page.locator('[data-testid=runs] [data-row="0"] input[type=checkbox]').check();
  await page.locator('[data-testid=runs] [data-row="1"] input[type=checkbox]').check();
  await page.click('[data-testid=compare-chosen]');
  await page.locator('[data-testid="chart-loss"] canvas').waitFor();
  await until('two curves', async () => (await text('[data-testid=compare-points]')).startsWith('2 curves'));
  await page.locator('[data-testid=compare-diff]').getByText('lr', { exact: true }).first().waitFor();
  await page.locator('[data-testid=compare-parallel] canvas').waitFor();
  await shot('compare-two');
  await page.goBack();
  await until('runs', async () => (await page.getAttribute('[data-testid=runs]', 'data-rows')) === String(seed.runs));
  await page.click('[data-testid=compare-all]');
  await until(`${seed.runs} curves`, async () => (await text('[data-testid=compare-points]')).startsWith(`${seed.runs} curves`), 60_000);
  await shot('compare-many');
});

await check("the MLflow client's run link opens the run page with params, tags and charts", async () => {
  await page.goto(`${base}/#/experiments/${seed.experiment_id}/runs/${seed.run_id}`);
  await page.locator('[data-testid=run-summary]').waitFor();
  await page.locator('[data-testid=params]').getByText('lr').waitFor();
  await page.locator('[data-testid="chart-loss"] canvas').waitFor();
  const note = await page.locator('[data-testid="chart-loss"] + p').innerText();
  if (!note.includes(seed.long_points.toLocaleString('en'))) throw new Error(`chart note: ${note}`);
  await page.check('text=log scale');
  await page.locator('[data-testid="chart-loss"] canvas').waitFor();
  await shot('run');
});

await check('the experiment link opens its runs', async () => {
  await page.goto(`${base}/#/experiments/${seed.experiment_id}`);
  await until('runs', async () => Number(await page.getAttribute('[data-testid=runs]', 'data-rows')) > 0);
});

await check("a training run shows its lineage, artifacts (a JSON preview) and its job's log", async () => {
  await page.goto(`${base}/#/experiments/${seed.train_experiment_id}/runs/${seed.train_run_id}`);
  await page.locator('[data-testid=lineage]').waitFor();
  // The engine's per-layer norms, one chart for weights and one for gradients.
  await page.locator('[data-testid="chart-weight norm per layer"] canvas').waitFor();
  await page.locator('[data-testid="chart-gradient norm per layer"] canvas').waitFor();
  await page.locator('[data-testid=artifacts]').getByText('model').first().click();
  await page.locator('[data-testid=artifacts]').getByText('trainyard-model.json').click();
  await page.locator('[data-testid=artifact-preview]').getByText('"input"').waitFor();
  await until('the log', async () => (await text('[data-testid=log]')).length > 0);
  await shot('run-training');
});

await check('the jobs list shows state, pool and resources', async () => {
  await page.goto(`${base}/#/jobs`);
  await page.locator(`[data-job="${seed.follow_job}"]`).waitFor();
  await shot('jobs');
});

await check("a running job's log is followed live until it ends", async () => {
  await page.goto(`${base}/#/jobs/${seed.follow_job}`);
  await page.locator('[data-testid=log]').getByText('line 1').waitFor();
  await page.locator('[data-testid=log-state]').getByText('end of log').waitFor({ timeout: 60_000 });
  const log = await text('[data-testid=log]');
  if (!log.includes('all done')) throw new Error(`log: ${log}`);
  await page.locator('[data-testid=job-summary]').getByText('succeeded').waitFor();
  await shot('job-followed');
});

await check('cancel ends a running job, and retry runs it again', async () => {
  await page.goto(`${base}/#/jobs/${seed.cancel_job}`);
  await page.locator('[data-testid=job-summary]').getByText('running').waitFor();
  await page.click('[data-testid=cancel]');
  await page.locator('[data-testid=job-summary]').getByText('cancelled').waitFor({ timeout: 30_000 });
  await shot('job-cancelled');
  // Retry runs it again as a new job, whose page says what it repeats; cancel that too.
  await page.click('[data-testid=retry]');
  await page.getByText(`a retry of ${seed.cancel_job}`).waitFor();
  await page.locator('[data-testid=job-summary]').getByText('running').waitFor({ timeout: 30_000 });
  await page.click('[data-testid=cancel]');
  await page.locator('[data-testid=job-summary]').getByText('cancelled').waitFor({ timeout: 30_000 });
});

await check("the model version link opens the version, and it loads and unloads", async () => {
  await page.goto(`${base}/#/models/${seed.model}/versions/1`);
  await page.locator('[data-testid=version-summary]').waitFor();
  await page.locator('[data-testid=version-tags]').getByText('trainyard.format').waitFor();
  await page.click('[data-testid=load]');
  await page.locator('[data-testid=serving-state]').getByText('READY').waitFor({ timeout: 30_000 });
  await page.locator('[data-testid=serving-stats]').getByText('inferences').waitFor();
  await shot('model-version');
  await page.click('[data-testid=unload]');
  await until('unloaded', async () => !(await page.locator('[data-testid=serving-state]').first().innerText()).includes('READY'));
});

await check("a version shows its evaluation: confusion matrix, per-class scores, worst rows and layers", async () => {
  await page.goto(`${base}/#/models/${seed.model}/versions/1`);
  await page.locator('[data-testid=confusion]').waitFor();
  const cells = await page.locator('[data-testid=confusion] tbody tr').count();
  if (cells !== 10) throw new Error(`${cells} rows in the confusion matrix`);
  await page.locator('[data-testid=per-class]').waitFor();
  // The rows it got most wrong, drawn as the 8×8 digits they are.
  await until('12 worst rows as images', async () => (await page.locator('[data-testid=worst-rows] img.thumb').count()) === 12);
  // Its layers, with output shapes and weights (2,410 in the MLP).
  await page.locator('[data-testid=layers] .layer[data-op]').first().waitFor();
  const layers = await page.locator('[data-testid=layers]').innerText();
  if (!/→ \[[^\]]*10\]/.test(layers) || !layers.includes('weights')) throw new Error(`layers: ${layers}`);
  await page.locator('h2', { hasText: '2,410 weights' }).waitFor();
  await shot('model-evaluation');
});

await check('the models list and a model page show versions, their lineage and a compression report', async () => {
  await page.goto(`${base}/#/models`);
  await page.locator('[data-testid=models]').getByText(seed.model).click();
  await page.locator('[data-testid=versions]').waitFor();
  await page.locator('[data-testid=lineage-graph]').getByText('compressed').first().waitFor();
  await shot('models');
  await page.goto(`${base}/#/models/${seed.model}/versions/2`);
  await page.locator('[data-testid=compression-report]').getByText('fp16').first().waitFor();
  await shot('model-compressed');
});

await check('a dataset shows its versions, schema, class histogram, lineage and its first rows as images', async () => {
  await page.goto(`${base}/#/datasets`);
  await page.locator('[data-testid=datasets]').getByText(seed.dataset, { exact: true }).click();
  await page.locator('[data-testid=schema]').getByText('pixels').waitFor();
  await page.locator('[data-testid=histogram]').first().waitFor();
  await page.locator('[data-testid=lineage-steps]').getByText('step 1').waitFor();
  await until('20 rows with images', async () => (await page.locator('[data-testid=head] img.thumb').count()) === 20);
  await shot('dataset');
});

await check("a study shows its history, parallel coordinates, importances and intermediate values", async () => {
  await page.goto(`${base}/#/studies`);
  await page.locator('[data-testid=studies]').getByText(seed.study).click();
  await page.locator('[data-testid="chart-objective"] canvas').waitFor();
  await page.locator('[data-testid=study-parallel] canvas').waitFor();
  await page.locator('[data-testid="chart-intermediate"] canvas').waitFor();
  await until('16 trials', async () => (await page.locator('[data-testid=trials] tbody tr').count()) === 16);
  const first = await page.locator('[data-testid=importances] th').first().innerText();
  if (first !== 'x') throw new Error(`the most important parameter shown is ${first}, not x`);
  await shot('study');
});

await check('the cluster page shows pools, workspaces and the queue; the audit log filters', async () => {
  await page.goto(`${base}/#/cluster`);
  await page.locator('[data-testid=pools]').getByText('local').first().waitFor();
  await page.locator('[data-testid=workspaces]').getByText('default').waitFor();
  await shot('cluster');
  await page.goto(`${base}/#/audit`);
  await page.locator('[data-testid=audit]').getByText('POST').first().waitFor();
  await page.selectOption('select[name=outcome]', 'denied');
  await page.click('button:text-is("Filter")');
  await until('only denied calls', async () => {
    const cells = await page.locator('[data-testid=audit] tbody tr td:last-child').allInnerTexts();
    return cells.length > 0 && cells.every((c) => c.trim() === 'denied');
  });
  await shot('audit');
});

await check('an unknown page says so', async () => {
  await page.goto(`${base}/#/nowhere`);
  await page.locator('.problem').getByText('No page at /nowhere').waitFor();
});

await browser.close();
console.log(`ui: ${step} checks passed, screenshots in ${shots}`);
