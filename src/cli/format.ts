// Plain-text tables and units for the command line.

/** Renders rows as an aligned table; numbers are right-aligned. */
export function table(headers: string[], rows: Array<Array<string | number>>): string {
  const cells = rows.map((row) => row.map(String));
  const widths = headers.map((h, i) => Math.max(h.length, ...cells.map((r) => (r[i] ?? '').length)));
  const numeric = headers.map((_, i) => rows.length > 0 && rows.every((r) => typeof r[i] === 'number'));
  const line = (row: string[]): string =>
    row.map((cell, i) => (numeric[i] ? cell.padStart(widths[i]) : cell.padEnd(widths[i]))).join('  ').trimEnd();
  return [line(headers), ...cells.map(line)].join('\n');
}

export function formatBytes(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(1)} ${units[unit]}`;
}

export function formatNs(ns: number): string {
  if (ns < 1e3) return `${ns.toFixed(0)} ns`;
  if (ns < 1e6) return `${(ns / 1e3).toFixed(1)} us`;
  if (ns < 1e9) return `${(ns / 1e6).toFixed(1)} ms`;
  return `${(ns / 1e9).toFixed(2)} s`;
}

/** One column of a tabular command: its `-o` key, its table header, its text and its CSV value. */
export interface Column<T> {
  key: string;
  header: string;
  text: (row: T) => string | number;
  /** The machine value for CSV (bytes, ns, plain numbers); default: the text. */
  raw?: (row: T) => string | number | null;
}

/** How a tabular command prints: an aligned table (default) or CSV, with or without the header line. */
export interface TableFormat {
  format?: 'table' | 'csv';
  header?: boolean;
  /** Table only: the widest a line may be (a terminal's columns); `shrink` names the column to cut. */
  maxWidth?: number;
  shrink?: string;
}

/** A CSV field as RFC 4180 writes it: quoted when it holds a comma, a quote or a line break. */
function csvField(value: string | number | null): string {
  const text = value === null ? '' : String(value);
  return /[",\r\n]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
}

/** Cuts `text` to `width` characters, marking the cut with an ellipsis. */
export function truncate(text: string, width: number): string {
  if (text.length <= width) return text;
  return width <= 1 ? text.slice(0, Math.max(0, width)) : `${text.slice(0, width - 1)}…`;
}

/** Renders `rows` with `columns` as a table or CSV (no trailing newline). */
export function renderRows<T>(columns: Column<T>[], rows: T[], options: TableFormat = {}): string {
  const header = options.header !== false;
  if (options.format === 'csv') {
    const lines = rows.map((row) => columns.map((c) => csvField(c.raw ? c.raw(row) : c.text(row))).join(','));
    return (header ? [columns.map((c) => c.key).join(','), ...lines] : lines).join('\n');
  }
  let cells = rows.map((row) => columns.map((c) => c.text(row)));
  const shrink = options.shrink === undefined ? -1 : columns.findIndex((c) => c.key === options.shrink);
  if (options.maxWidth !== undefined && shrink >= 0) {
    // The other columns keep their width; the shrinking one gets what is left (at least its header's width).
    const width = (i: number) => Math.max(columns[i].header.length, ...cells.map((r) => String(r[i]).length));
    const others = columns.reduce((sum, _, i) => (i === shrink ? sum : sum + width(i)), 0) + 2 * (columns.length - 1);
    const room = Math.max(columns[shrink].header.length, options.maxWidth - others);
    cells = cells.map((r) => r.map((cell, i) => (i === shrink ? truncate(String(cell), room) : cell)));
  }
  const text = table(columns.map((c) => c.header), cells);
  return header ? text : text.split('\n').slice(1).join('\n');
}

/** Comma-separated CSV keys: the names `-o` takes, in order. */
export function columnKeys<T>(columns: Column<T>[]): string {
  return columns.map((c) => c.key).join(', ');
}
