// Hash routes, so that the MLflow client's links (`/#/experiments/2/runs/<id>`) and
// bookmarks open the right page with no server-side routing.
import { useEffect, useState } from 'preact/hooks';

export type Route =
  | { page: 'experiments' }
  | { page: 'runs'; experiment: string }
  | { page: 'run'; experiment: string; run: string }
  | { page: 'jobs' }
  | { page: 'job'; job: string }
  | { page: 'models' }
  | { page: 'model'; model: string }
  | { page: 'version'; model: string; version: string }
  | { page: 'compare'; runs: string[] }
  | { page: 'studies' }
  | { page: 'study'; study: string }
  | { page: 'datasets' }
  | { page: 'dataset'; dataset: string }
  | { page: 'cluster' }
  | { page: 'audit' }
  | { page: 'login' }
  | { page: 'missing'; path: string };

export function parse(hash: string): Route {
  const [rawPath, search] = hash.replace(/^#/, '').split('?');
  const path = rawPath || '/';
  const params = new URLSearchParams(search ?? '');
  let parts: string[];
  try {
    parts = path.split('/').filter(Boolean).map(decodeURIComponent);
  } catch {
    return { page: 'missing', path };
  }
  const [a, b, c, d] = parts;
  if (parts.length === 0) return { page: 'experiments' };
  if (a === 'login' && parts.length === 1) return { page: 'login' };
  if (a === 'experiments') {
    if (parts.length === 1) return { page: 'experiments' };
    if (parts.length === 2) return { page: 'runs', experiment: b };
    if (parts.length === 4 && c === 'runs') return { page: 'run', experiment: b, run: d };
  }
  if (a === 'compare' && parts.length === 1) {
    return { page: 'compare', runs: (params.get('runs') ?? '').split(',').filter(Boolean) };
  }
  if (a === 'studies') {
    if (parts.length === 1) return { page: 'studies' };
    if (parts.length === 2) return { page: 'study', study: b };
  }
  if (a === 'datasets') {
    if (parts.length === 1) return { page: 'datasets' };
    if (parts.length === 2) return { page: 'dataset', dataset: b };
  }
  if (a === 'cluster' && parts.length === 1) return { page: 'cluster' };
  if (a === 'audit' && parts.length === 1) return { page: 'audit' };
  if (a === 'jobs') {
    if (parts.length === 1) return { page: 'jobs' };
    if (parts.length === 2) return { page: 'job', job: b };
  }
  if (a === 'models') {
    if (parts.length === 1) return { page: 'models' };
    if (parts.length === 2) return { page: 'model', model: b };
    if (parts.length === 4 && c === 'versions') return { page: 'version', model: b, version: d };
  }
  return { page: 'missing', path };
}

export function href(...parts: (string | number)[]): string {
  return '#/' + parts.map((p) => encodeURIComponent(String(p))).join('/');
}

export function useRoute(): Route {
  const [route, setRoute] = useState(() => parse(location.hash));
  useEffect(() => {
    const on = () => setRoute(parse(location.hash));
    window.addEventListener('hashchange', on);
    return () => window.removeEventListener('hashchange', on);
  }, []);
  return route;
}
