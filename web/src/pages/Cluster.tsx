// The cluster: capacity and free resources per pool with its nodes, what each workspace
// holds, the queue with why each job waits, and (for admins) the audit log with filters.
import { useState } from 'preact/hooks';
import { get, query, type Job } from '../api';
import { Problem, Section, Status } from '../components/Status';
import { time } from '../format';
import { useLoad } from '../hooks';
import { href } from '../router';

interface Amounts {
  cpus: number;
  memory_mb: number;
  gpus: number[];
}

interface Pool {
  name: string;
  executor: string;
  capacity: Amounts;
  free: Amounts;
  queued: number;
  running: number;
  nodes: { name: string; state?: string; cpus?: number; memory_mb?: number; gpus?: number }[];
  inventory_error?: string | null;
}

interface Usage {
  capacity: Amounts;
  free: Amounts;
  queued: number;
  running: number;
  pools: Pool[];
  leading: boolean;
  leader?: string | null;
}

interface WorkspaceView {
  name: string;
  weight: number;
  quota: Record<string, number | null>;
  in_use: { cpus: number; memory_mb: number; gpus: number; running_jobs: number };
  queued_jobs: number;
}

function amounts(a: Amounts): string {
  return `${a.cpus} cpu, ${Math.round(a.memory_mb / 1024)} GiB, ${a.gpus.length} gpu`;
}

export function Cluster() {
  const usage = useLoad((s) => get<Usage>('/api/v1/resources', s), [], 3000);
  const spaces = useLoad((s) => get<{ workspaces: WorkspaceView[] }>('/api/v1/workspaces', s), [], 5000);
  const jobs = useLoad((s) => get<{ jobs: Job[] }>('/api/v1/jobs', s), [], 3000);
  const u = usage.data;
  const queued = (jobs.data?.jobs ?? []).filter((j) => j.state === 'queued');
  return (
    <div>
      <h1>Cluster</h1>
      <Problem error={usage.error} />
      {u && (
        <>
          <p class="summary" data-testid="cluster-summary">
            {u.running} running, {u.queued} queued · free {amounts(u.free)} of {amounts(u.capacity)}
            {!u.leading && u.leader && <> · scheduling on {u.leader}</>}
          </p>
          <Section title="Pools">
            <table class="list" data-testid="pools">
              <thead>
                <tr>
                  <th>Pool</th>
                  <th>Executor</th>
                  <th>Capacity</th>
                  <th>Free</th>
                  <th>Running</th>
                  <th>Queued</th>
                  <th>Nodes</th>
                </tr>
              </thead>
              <tbody>
                {u.pools.map((p) => (
                  <tr>
                    <th>{p.name}</th>
                    <td>{p.executor}</td>
                    <td>{amounts(p.capacity)}</td>
                    <td>
                      {amounts(p.free)}
                      <Meter used={p.capacity.cpus - p.free.cpus} of={p.capacity.cpus} />
                    </td>
                    <td>{p.running}</td>
                    <td>{p.queued}</td>
                    <td class="small">{p.nodes.length ? p.nodes.map((n) => `${n.name}${n.state ? ` (${n.state})` : ''}`).join(', ') : p.inventory_error ?? ''}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </Section>
        </>
      )}
      {spaces.data && (
        <Section title="Workspaces">
          <table class="list" data-testid="workspaces">
            <thead>
              <tr>
                <th>Workspace</th>
                <th>Weight</th>
                <th>Running</th>
                <th>Holding</th>
                <th>Queued</th>
                <th>Quota</th>
              </tr>
            </thead>
            <tbody>
              {spaces.data.workspaces.map((w) => (
                <tr>
                  <th>{w.name}</th>
                  <td>{w.weight}</td>
                  <td>{w.in_use.running_jobs}</td>
                  <td>
                    {w.in_use.cpus} cpu, {Math.round(w.in_use.memory_mb / 1024)} GiB, {w.in_use.gpus} gpu
                  </td>
                  <td>{w.queued_jobs}</td>
                  <td class="small">
                    {Object.entries(w.quota ?? {})
                      .filter(([, v]) => v !== null && v !== undefined)
                      .map(([k, v]) => `${k} ${v}`)
                      .join(', ') || 'none'}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </Section>
      )}
      <Section title="Queue">
        {queued.length === 0 ? (
          <p class="muted">nothing waits</p>
        ) : (
          <table class="list" data-testid="queue">
            <thead>
              <tr>
                <th>Job</th>
                <th>Pool</th>
                <th>Priority</th>
                <th>Queued since</th>
                <th>Why it waits</th>
              </tr>
            </thead>
            <tbody>
              {queued.map((j) => (
                <tr>
                  <td>
                    <a href={href('jobs', j.id)}>{j.name || j.id}</a>
                  </td>
                  <td>{j.pool ?? ''}</td>
                  <td>{j.priority}</td>
                  <td>{time(j.created_at_ms)}</td>
                  <td class="small">{j.message ?? ''}</td>
                </tr>
              ))}
            </tbody>
          </table>
        )}
      </Section>
    </div>
  );
}

function Meter(props: { used: number; of: number }) {
  const share = props.of > 0 ? Math.min(1, Math.max(0, props.used / props.of)) : 0;
  return (
    <div class="meter" title={`${Math.round(share * 100)} % of the cpus in use`}>
      <div style={{ width: `${share * 100}%` }} />
    </div>
  );
}

interface AuditEvent {
  id: string;
  at_ms: number;
  workspace?: string | null;
  principal?: string | null;
  role?: string | null;
  action: string;
  target: string;
  status: number;
  outcome: string;
  client?: string | null;
}

export function Audit() {
  const [outcome, setOutcome] = useState('');
  const [action, setAction] = useState('');
  const [applied, setApplied] = useState({ outcome: '', action: '' });
  const log = useLoad((s) => get<{ events: AuditEvent[] }>(query('/api/v1/audit', { ...applied, limit: 200 }), s), [applied.outcome, applied.action]);
  return (
    <div>
      <h1>Audit log</h1>
      <form
        class="toolbar"
        onSubmit={(e) => {
          e.preventDefault();
          setApplied({ outcome, action });
        }}
      >
        <select name="outcome" value={outcome} onChange={(e) => setOutcome(e.currentTarget.value)}>
          <option value="">every outcome</option>
          <option value="ok">ok</option>
          <option value="denied">denied</option>
          <option value="failed">failed</option>
        </select>
        <input name="action" placeholder="POST /api/v1/jobs" value={action} onInput={(e) => setAction(e.currentTarget.value)} />
        <button type="submit">Filter</button>
      </form>
      <Problem error={log.error} />
      <table class="list" data-testid="audit">
        <thead>
          <tr>
            <th>When</th>
            <th>Who</th>
            <th>Workspace</th>
            <th>Action</th>
            <th>Target</th>
            <th>Status</th>
            <th>Outcome</th>
          </tr>
        </thead>
        <tbody>
          {log.data?.events.map((e) => (
            <tr>
              <td>{time(e.at_ms)}</td>
              <td>
                {e.principal ?? ''} {e.role && <span class="muted">({e.role})</span>}
              </td>
              <td>{e.workspace ?? ''}</td>
              <td class="mono">{e.action}</td>
              <td class="mono clip">{e.target}</td>
              <td>{e.status}</td>
              <td>
                <Status state={e.outcome} />
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}
