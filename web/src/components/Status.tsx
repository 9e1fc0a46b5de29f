import type { ComponentChildren } from 'preact';

export function Status(props: { state: string }) {
  return <span class={`status status-${props.state.toLowerCase()}`}>{props.state.toLowerCase()}</span>;
}

export function Problem(props: { error?: Error }) {
  if (!props.error) return null;
  return (
    <div class="problem" role="alert">
      {props.error.message}
    </div>
  );
}

export function Section(props: { title: string; children: ComponentChildren }) {
  return (
    <section>
      <h2>{props.title}</h2>
      {props.children}
    </section>
  );
}

export function KeyValues(props: { values: Record<string, string>; testid?: string }) {
  const entries = Object.entries(props.values);
  if (entries.length === 0) return <p class="muted">none</p>;
  return (
    <table class="kv" data-testid={props.testid}>
      <tbody>
        {entries.map(([k, v]) => (
          <tr>
            <th>{k}</th>
            <td>{v}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}
