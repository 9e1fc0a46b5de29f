// A table that renders only the rows in view: 100,000 rows scroll like 100.
import type { ComponentChildren } from 'preact';
import { useLayoutEffect, useRef, useState } from 'preact/hooks';

export interface Column<T> {
  key: string;
  title: string;
  width?: number;
  cell: (row: T) => ComponentChildren;
  sort?: string;
}

const ROW = 28;
const OVERSCAN = 10;

export function VirtualTable<T>(props: {
  rows: T[];
  columns: Column<T>[];
  rowKey: (row: T) => string;
  onSort?: (key: string) => void;
  sorted?: string;
  height?: number;
  testid?: string;
}) {
  const scroller = useRef<HTMLDivElement>(null);
  const [top, setTop] = useState(0);
  const [view, setView] = useState(props.height ?? 600);
  useLayoutEffect(() => {
    const el = scroller.current;
    if (el) setView(el.clientHeight || view);
  }, []);
  const first = Math.max(0, Math.floor(top / ROW) - OVERSCAN);
  const last = Math.min(props.rows.length, Math.ceil((top + view) / ROW) + OVERSCAN);
  const template = props.columns.map((c) => `${c.width ?? 140}px`).join(' ');
  const width = props.columns.reduce((w, c) => w + (c.width ?? 140), 0);
  return (
    <div
      class="vtable"
      ref={scroller}
      style={{ height: `${props.height ?? 600}px` }}
      onScroll={(e) => setTop((e.currentTarget as HTMLDivElement).scrollTop)}
      data-testid={props.testid}
      data-rows={props.rows.length}
    >
      <div class="vtable-head" style={{ gridTemplateColumns: template, width: `${width}px` }}>
        {props.columns.map((c) => (
          <div
            class={c.sort ? 'sortable' : ''}
            title={c.title}
            onClick={() => c.sort && props.onSort?.(c.sort)}
          >
            {c.title}
            {props.sorted?.startsWith(c.sort ?? '\u0000') ? (props.sorted.endsWith('ASC') ? ' ▲' : ' ▼') : ''}
          </div>
        ))}
      </div>
      <div style={{ height: `${props.rows.length * ROW}px`, position: 'relative', width: `${width}px` }}>
        {props.rows.slice(first, last).map((row, i) => (
          <div
            class="vtable-row"
            key={props.rowKey(row)}
            data-row={first + i}
            style={{ top: `${(first + i) * ROW}px`, gridTemplateColumns: template }}
          >
            {props.columns.map((c) => (
              <div>{c.cell(row)}</div>
            ))}
          </div>
        ))}
      </div>
    </div>
  );
}
