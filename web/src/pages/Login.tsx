// Sign in with a user's password (POST /api/v1/login gives a token) or paste a token.
import { useState } from 'preact/hooks';
import { get, post, session, type WhoAmI } from '../api';

export function Login(props: { onSignedIn: () => void }) {
  const [user, setUser] = useState('');
  const [password, setPassword] = useState('');
  const [workspace, setWorkspace] = useState('');
  const [token, setToken] = useState('');
  const [error, setError] = useState('');
  const signIn = async (e: Event) => {
    e.preventDefault();
    setError('');
    try {
      if (token.trim()) {
        session.signIn(token.trim(), workspace.trim() || undefined);
      } else {
        const got = await post<{ token: string }>('/api/v1/login', {
          user,
          password,
          workspace: workspace.trim() || undefined,
        });
        session.signIn(got.token, workspace.trim() || undefined);
      }
      // A token is checked before the pages use it.
      await get<WhoAmI>('/api/v1/whoami');
      props.onSignedIn();
    } catch (err) {
      session.signOut();
      setError((err as Error).message);
    }
  };
  return (
    <form class="login" onSubmit={signIn}>
      <h1>Trainyard</h1>
      <label>
        User <input name="user" value={user} onInput={(e) => setUser(e.currentTarget.value)} autocomplete="username" />
      </label>
      <label>
        Password{' '}
        <input name="password" type="password" value={password} onInput={(e) => setPassword(e.currentTarget.value)} autocomplete="current-password" />
      </label>
      <p class="muted">or</p>
      <label>
        Token <input name="token" type="password" value={token} onInput={(e) => setToken(e.currentTarget.value)} />
      </label>
      <label>
        Workspace <input name="workspace" placeholder="default" value={workspace} onInput={(e) => setWorkspace(e.currentTarget.value)} />
      </label>
      <button type="submit">Sign in</button>
      {error && (
        <div class="problem" role="alert">
          {error}
        </div>
      )}
    </form>
  );
}
