// A job's log, followed live: one streaming request (`follow=true`) that the server keeps
// open until the job ends, resumed from the last byte if the connection drops.
import { useEffect, useRef, useState } from 'preact/hooks';
import { query, request } from '../api';

const MAX_CHARS = 2_000_000;

export function Log(props: { job: string; live: boolean; onEnd?: () => void }) {
  const [text, setText] = useState('');
  const [state, setState] = useState<'following' | 'ended' | 'error'>('following');
  const pre = useRef<HTMLPreElement>(null);
  const stick = useRef(true);
  useEffect(() => {
    const ctl = new AbortController();
    let offset = 0;
    let buffer = '';
    const decoder = new TextDecoder();
    const append = (chunk: string) => {
      buffer = (buffer + chunk).slice(-MAX_CHARS);
      setText(buffer);
    };
    (async () => {
      for (let attempt = 0; attempt < 20 && !ctl.signal.aborted; attempt++) {
        try {
          const res = await request(query(`/api/v1/jobs/${encodeURIComponent(props.job)}/logs`, { offset, follow: props.live }), {
            signal: ctl.signal,
          });
          const reader = res.body!.getReader();
          for (;;) {
            const { done, value } = await reader.read();
            if (done) break;
            offset += value.byteLength;
            append(decoder.decode(value, { stream: true }));
          }
          setState('ended');
          props.onEnd?.();
          return;
        } catch (e) {
          if (ctl.signal.aborted) return;
          await new Promise((r) => setTimeout(r, 1000));
        }
      }
      setState('error');
    })();
    return () => ctl.abort();
  }, [props.job, props.live]);
  useEffect(() => {
    const el = pre.current;
    if (el && stick.current) el.scrollTop = el.scrollHeight;
  }, [text]);
  return (
    <div class="log">
      <div class="log-state" data-testid="log-state">
        {state === 'following' ? (props.live ? 'following…' : 'loading…') : state === 'ended' ? 'end of log' : 'log unavailable'}
      </div>
      <pre
        ref={pre}
        data-testid="log"
        onScroll={(e) => {
          const el = e.currentTarget as HTMLPreElement;
          stick.current = el.scrollTop + el.clientHeight >= el.scrollHeight - 20;
        }}
      >
        {text}
      </pre>
    </div>
  );
}
