// Calls to Trainyard's REST v1 (and /v2 for serving): the token and the workspace the user
// chose go with every call; an error answer becomes an ApiError with the server's code.

const TOKEN_KEY = 'trainyard.token';
const WORKSPACE_KEY = 'trainyard.workspace';

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

export const session = {
  token(): string | null {
    return localStorage.getItem(TOKEN_KEY);
  },
  workspace(): string | null {
    return localStorage.getItem(WORKSPACE_KEY);
  },
  signIn(token: string, workspace?: string) {
    localStorage.setItem(TOKEN_KEY, token);
    if (workspace) localStorage.setItem(WORKSPACE_KEY, workspace);
  },
  useWorkspace(workspace: string) {
    localStorage.setItem(WORKSPACE_KEY, workspace);
  },
  signOut() {
    localStorage.removeItem(TOKEN_KEY);
    localStorage.removeItem(WORKSPACE_KEY);
  },
};

function headers(extra?: HeadersInit): Headers {
  const h = new Headers(extra);
  const token = session.token();
  if (token) h.set('Authorization', `Bearer ${token}`);
  const ws = session.workspace();
  if (ws) h.set('X-Trainyard-Workspace', ws);
  return h;
}

async function fail(res: Response): Promise<never> {
  let code = `http_${res.status}`;
  let message = res.statusText || `HTTP ${res.status}`;
  try {
    // REST v1 answers {"error": {"code", "message"}}; MLflow's routes {"error_code", "message"}.
    const body = await res.json();
    code = body.error?.code ?? body.error_code ?? code;
    message = body.error?.message ?? body.message ?? message;
  } catch {
    // Not JSON: keep the status line.
  }
  if (res.status === 401) window.dispatchEvent(new Event('trainyard:unauthorized'));
  throw new ApiError(res.status, code, message);
}

export async function request(path: string, init: RequestInit = {}): Promise<Response> {
  const res = await fetch(path, { ...init, headers: headers(init.headers) });
  if (!res.ok) await fail(res);
  return res;
}

export async function get<T>(path: string, signal?: AbortSignal): Promise<T> {
  return (await request(path, { signal })).json() as Promise<T>;
}

export async function post<T>(path: string, body?: unknown): Promise<T> {
  const res = await request(path, {
    method: 'POST',
    headers: body === undefined ? undefined : { 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  return (text ? JSON.parse(text) : {}) as T;
}

/** `path?k=v&…` with the undefined values left out. */
export function query(path: string, params: Record<string, string | number | boolean | undefined>): string {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== '') q.set(k, String(v));
  const s = q.toString();
  return s ? `${path}?${s}` : path;
}

// Shapes of the answers the pages read (see /api/v1/openapi.json).

export interface WhoAmI {
  user: string | null;
  token_name: string;
  workspace: string;
  role: string | null;
  read_only: boolean;
  narrowed: boolean;
}

export interface Experiment {
  experiment_id: string;
  name: string;
  creation_time: number;
  last_update_time: number;
  tags: Record<string, string>;
}

export interface LatestMetric {
  value: number | null;
  step: number;
  timestamp: number;
}

export interface Run {
  run_id: string;
  experiment_id: string;
  name: string;
  status: string;
  user_id: string;
  start_time: number;
  end_time: number | null;
  artifact_uri: string;
  job_id: string | null;
  params: Record<string, string>;
  tags: Record<string, string>;
  metrics: Record<string, LatestMetric>;
}

export interface RunList {
  runs: Run[];
  next_page_token?: string | null;
}

export interface MetricSeries {
  key: string;
  total_points: number;
  sampled: boolean;
  points: { step: number; timestamp: number; value: number | null }[];
}

export interface Resources {
  cpus?: number;
  memory_mb?: number;
  gpus?: number;
  workers?: number;
}

export interface Job {
  id: string;
  workspace: string;
  name: string;
  state: string;
  command: string[];
  task?: { kind: string; args: string[] } | null;
  resources: Resources;
  labels?: Record<string, string>;
  priority: number;
  attempt: number;
  max_retries: number;
  exit_code: number | null;
  message: string | null;
  host: string | null;
  pool: string | null;
  created_at_ms: number;
  started_at_ms: number | null;
  finished_at_ms?: number | null;
  tracking?: { run_id?: string | null; experiment_id?: string | null } | null;
}

export interface ModelVersion {
  version: number;
  stage: string;
  source: string;
  run_id: string;
  description: string;
  aliases: string[];
  tags: Record<string, string>;
  creation_time: number;
}

export interface Model {
  name: string;
  description: string;
  creation_time: number;
  last_updated_time: number;
  tags: Record<string, string>;
  aliases: Record<string, number>;
  versions: ModelVersion[];
}
