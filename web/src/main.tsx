// Trainyard's web UI: a single page over the REST v1 API (and /v2 for serving).
import { render } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import { ApiError, get, session, type WhoAmI } from './api';
import { Audit, Cluster } from './pages/Cluster';
import { Compare } from './pages/Compare';
import { Dataset, Datasets } from './pages/Datasets';
import { Experiments } from './pages/Experiments';
import { Job, Jobs } from './pages/Jobs';
import { Login } from './pages/Login';
import { Model, Models, Version } from './pages/Models';
import { Run } from './pages/Run';
import { Runs } from './pages/Runs';
import { StudyPage, Studies } from './pages/Studies';
import { href, useRoute, type Route } from './router';
import './style.css';

function Page(props: { route: Route }) {
  const r = props.route;
  switch (r.page) {
    case 'experiments':
      return <Experiments />;
    case 'runs':
      return <Runs experiment={r.experiment} />;
    case 'run':
      return <Run experiment={r.experiment} run={r.run} />;
    case 'compare':
      return <Compare runs={r.runs} />;
    case 'studies':
      return <Studies />;
    case 'study':
      return <StudyPage study={r.study} />;
    case 'datasets':
      return <Datasets />;
    case 'dataset':
      return <Dataset dataset={r.dataset} />;
    case 'cluster':
      return <Cluster />;
    case 'audit':
      return <Audit />;
    case 'jobs':
      return <Jobs />;
    case 'job':
      return <Job key={r.job} job={r.job} />;
    case 'models':
      return <Models />;
    case 'model':
      return <Model model={r.model} />;
    case 'version':
      return <Version model={r.model} version={r.version} />;
    case 'login':
      return <Experiments />;
    case 'missing':
      return (
        <div class="problem" role="alert">
          No page at {r.path}
        </div>
      );
  }
}

function WorkspaceSwitcher(props: { who: WhoAmI; onChange: () => void }) {
  const [names, setNames] = useState<string[]>([props.who.workspace]);
  useEffect(() => {
    get<{ workspaces: { name: string }[] }>('/api/v1/workspaces').then(
      (r) => setNames(Array.from(new Set([props.who.workspace, ...r.workspaces.map((w) => w.name)])).sort()),
      () => undefined,
    );
  }, [props.who.workspace]);
  if (props.who.narrowed) return <span class="workspace">{props.who.workspace}</span>;
  return (
    <select
      class="workspace"
      data-testid="workspace"
      value={props.who.workspace}
      onChange={(e) => {
        session.useWorkspace(e.currentTarget.value);
        props.onChange();
      }}
    >
      {names.map((n) => (
        <option value={n}>{n}</option>
      ))}
    </select>
  );
}

function App() {
  const route = useRoute();
  const [who, setWho] = useState<WhoAmI | null>(null);
  const [checked, setChecked] = useState(false);
  const [epoch, setEpoch] = useState(0);
  useEffect(() => {
    if (!session.token()) {
      setWho(null);
      setChecked(true);
      return;
    }
    get<WhoAmI>('/api/v1/whoami').then(
      (w) => {
        setWho(w);
        setChecked(true);
      },
      (e) => {
        if (e instanceof ApiError && e.status === 401) session.signOut();
        setWho(null);
        setChecked(true);
      },
    );
  }, [epoch]);
  useEffect(() => {
    const out = () => setEpoch((n) => n + 1);
    window.addEventListener('trainyard:unauthorized', out);
    return () => window.removeEventListener('trainyard:unauthorized', out);
  }, []);
  if (!checked) return null;
  if (!who) return <Login onSignedIn={() => setEpoch((n) => n + 1)} />;
  const at = route.page;
  const nav = (to: string, label: string, pages: string[]) => (
    <a href={to} class={pages.includes(at) ? 'active' : ''}>
      {label}
    </a>
  );
  return (
    <div class="app" key={`${who.workspace}-${epoch}`}>
      <header>
        <a class="brand" href="#/">
          Trainyard
        </a>
        <nav>
          {nav(href('experiments'), 'Experiments', ['experiments', 'runs', 'run', 'compare', 'login'])}
          {nav(href('jobs'), 'Jobs', ['jobs', 'job'])}
          {nav(href('models'), 'Models', ['models', 'model', 'version'])}
          {nav(href('datasets'), 'Datasets', ['datasets', 'dataset'])}
          {nav(href('studies'), 'Studies', ['studies', 'study'])}
          {nav(href('cluster'), 'Cluster', ['cluster'])}
          {who.role === 'admin' || who.role === 'owner' ? nav(href('audit'), 'Audit', ['audit']) : null}
        </nav>
        <span class="spacer" />
        <WorkspaceSwitcher who={who} onChange={() => setEpoch((n) => n + 1)} />
        <span class="muted">{who.user ?? who.token_name}</span>
        <button
          type="button"
          onClick={() => {
            session.signOut();
            setEpoch((n) => n + 1);
          }}
        >
          Sign out
        </button>
      </header>
      <main>
        <Page route={route} />
      </main>
    </div>
  );
}

render(<App />, document.getElementById('app')!);
