// Jobs of the workspace, refreshed every few seconds; a job's page follows its log live and
// cancels it.
import { useEffect, useState } from 'preact/hooks';
import { get, post, type Job as JobView, type Run } from '../api';
import { Log } from '../components/Log';
import { KeyValues, Problem, Section, Status } from '../components/Status';
import { duration, time } from '../format';
import { useLoad } from '../hooks';
import { href } from '../router';

const STUDY_LABEL = 'trainyard.study_id';
const ENDED = ['succeeded', 'failed', 'cancelled'];

function resources(j: JobView): string {
  const r = j.resources ?? {};
  const parts = [`${r.cpus ?? 1} cpu`];
  if (r.memory_mb) parts.push(`${r.memory_mb} MB`);
  if (r.gpus) parts.push(`${r.gpus} gpu`);
  if (r.workers && r.workers > 1) parts.push(`× ${r.workers} workers`);
  return parts.join(', ');
}

function what(j: JobView): string {
  return j.task ? `task ${j.task.kind}` : j.command.join(' ');
}

export function Jobs() {
  const { data, error } = useLoad((s) => get<{ jobs: JobView[] }>('/api/v1/jobs', s), [], 3000);
  return (
    <div>
      <h1>Jobs</h1>
      <Problem error={error} />
      <table class="list" data-testid="jobs">
        <thead>
          <tr>
            <th>Name</th>
            <th>State</th>
            <th>Pool</th>
            <th>Resources</th>
            <th>Attempt</th>
            <th>Created</th>
            <th>Ran for</th>
            <th>Command</th>
          </tr>
        </thead>
        <tbody>
          {data?.jobs.map((j) => (
            <tr data-job={j.id}>
              <td>
                <a href={href('jobs', j.id)}>{j.name || j.id}</a>
              </td>
              <td>
                <Status state={j.state} />
              </td>
              <td>{j.pool ?? ''}</td>
              <td>{resources(j)}</td>
              <td>{j.attempt}</td>
              <td>{time(j.created_at_ms)}</td>
              <td>{duration(j.started_at_ms, j.finished_at_ms ?? undefined)}</td>
              <td class="mono clip">{what(j)}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

export function Job(props: { job: string }) {
  const [live, setLive] = useState(true);
  const job = useLoad((s) => get<JobView>(`/api/v1/jobs/${encodeURIComponent(props.job)}`, s), [props.job], live ? 2000 : undefined);
  const run = useLoad((s) => get<Run>(`/api/v1/runs/${encodeURIComponent(props.job)}`, s).catch(() => undefined), [props.job]);
  const [problem, setProblem] = useState<Error>();
  const j = job.data;
  const ended = j ? ENDED.includes(j.state) : false;
  // A study's trial (the server's `trainyard.study_id` label) is its study's to run again.
  const ofStudy = j?.labels !== undefined && STUDY_LABEL in j.labels;
  useEffect(() => {
    if (ended) setLive(false);
  }, [ended]);
  const retry = async () => {
    try {
      const again = await post<JobView>(`/api/v1/jobs/${encodeURIComponent(props.job)}/retry`);
      location.hash = href('jobs', again.id);
    } catch (e) {
      setProblem(e as Error);
    }
  };
  const cancel = async () => {
    try {
      await post(`/api/v1/jobs/${encodeURIComponent(props.job)}/cancel`);
      job.reload();
    } catch (e) {
      setProblem(e as Error);
    }
  };
  return (
    <div>
      <h1>
        <a href={href('jobs')}>Jobs</a> / {j?.name || props.job}
      </h1>
      <Problem error={job.error ?? problem} />
      {j && (
        <>
          <p class="summary" data-testid="job-summary">
            <Status state={j.state} /> attempt {j.attempt} of {j.max_retries + 1} · {resources(j)}
            {j.pool && <> · pool {j.pool}</>}
            {j.host && <> · on {j.host}</>}
            {j.exit_code !== null && <> · exit {j.exit_code}</>}
            {run.data && (
              <>
                {' '}
                · run <a href={href('experiments', run.data.experiment_id, 'runs', run.data.run_id)}>{run.data.name || run.data.run_id}</a>
              </>
            )}
          </p>
          {j.message && <p class="muted">{j.message}</p>}
          {!ended && (
            <button type="button" class="danger" onClick={cancel} data-testid="cancel">
              Cancel
            </button>
          )}
          {ended && !ofStudy && (
            <button type="button" onClick={retry} data-testid="retry" title="run it again as a new job">
              Retry
            </button>
          )}
          {ofStudy && (
            <p class="muted small">
              a trial of a study, which runs its trials itself (no retry by hand)
            </p>
          )}
          {j.labels?.retry_of && (
            <p class="muted small">
              a retry of <a href={href('jobs', j.labels.retry_of)}>{j.labels.retry_of}</a>
            </p>
          )}
          <Section title="Details">
            <KeyValues
              values={{
                command: what(j),
                created: time(j.created_at_ms),
                started: time(j.started_at_ms),
                finished: time(j.finished_at_ms ?? null),
                priority: String(j.priority),
              }}
            />
          </Section>
          <Section title="Log">
            <Log job={j.id} live={!ended} onEnd={() => job.reload()} />
          </Section>
        </>
      )}
    </div>
  );
}
