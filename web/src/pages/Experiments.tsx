import { get, type Experiment } from '../api';
import { Problem } from '../components/Status';
import { time } from '../format';
import { useLoad } from '../hooks';
import { href } from '../router';

export function Experiments() {
  const { data, error } = useLoad((s) => get<{ experiments: Experiment[] }>('/api/v1/experiments', s), []);
  return (
    <div>
      <h1>Experiments</h1>
      <Problem error={error} />
      <table class="list" data-testid="experiments">
        <thead>
          <tr>
            <th>Name</th>
            <th>Id</th>
            <th>Created</th>
            <th>Updated</th>
          </tr>
        </thead>
        <tbody>
          {data?.experiments.map((e) => (
            <tr>
              <td>
                <a href={href('experiments', e.experiment_id)}>{e.name}</a>
              </td>
              <td>{e.experiment_id}</td>
              <td>{time(e.creation_time)}</td>
              <td>{time(e.last_update_time)}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}
