// A one-line progress bar redrawn in place (carriage return), for stderr on a TTY: used by the CLI and by
// `generate(..., { progress: true })`. Callers decide whether to draw at all (a pipe or a log file must not
// receive redraw noise), so this class always writes.

export interface ProgressBarOptions {
  /** Text before the bar. */
  label?: string
  /** Where to draw; default process.stderr. */
  stream?: NodeJS.WriteStream
  /** Count bytes (a download) rather than requests. */
  bytes?: boolean
}

const REDRAW_MS = 100

export class ProgressBar {
  #total: number | undefined
  #done = 0
  #tokens = 0
  #start = performance.now()
  #lastDraw = -Infinity
  #ended = false
  /** Whether the last draw shows the current counts (end() then need not draw again). */
  #current = false
  readonly #opts: ProgressBarOptions
  readonly #stream: NodeJS.WriteStream

  constructor(total: number | undefined, opts: ProgressBarOptions = {}) {
    this.#total = total
    this.#opts = opts
    this.#stream = opts.stream ?? process.stderr
    this.#draw(true)
  }

  /** One more item done, with the tokens it produced (for the tok/s column). */
  tick(tokens = 0): void {
    this.#done++
    this.#tokens += tokens
    this.#current = false
    this.#draw(this.#done === this.#total)
  }

  /** Absolute position (downloads report bytes so far). */
  update(done: number, total?: number): void {
    this.#done = done
    if (total !== undefined) this.#total = total
    this.#current = false
    this.#draw(this.#done === this.#total)
  }

  /** Final redraw and newline; idempotent. */
  end(): void {
    if (this.#ended) return
    if (!this.#current) this.#draw(true)
    this.#ended = true
    this.#stream.write('\n')
  }

  #draw(force: boolean): void {
    const now = performance.now()
    if (this.#ended || (!force && now - this.#lastDraw < REDRAW_MS)) return
    this.#lastDraw = now
    this.#current = true
    const secs = (now - this.#start) / 1000
    const total = this.#total
    const fmt = this.#opts.bytes ? formatBytes : String
    const parts = [total === undefined ? fmt(this.#done) : `${fmt(this.#done)}/${fmt(total)}`]
    if (this.#opts.bytes) parts.push(`${formatBytes(this.#done / Math.max(secs, 1e-3))}/s`)
    else if (this.#tokens > 0) parts.push(`${(this.#tokens / Math.max(secs, 1e-3)).toFixed(1)} tok/s`)
    if (total !== undefined && this.#done > 0 && this.#done < total) parts.push(`ETA ${formatDuration((secs / this.#done) * (total - this.#done))}`)
    else parts.push(formatDuration(secs))
    const label = this.#opts.label ? `${this.#opts.label} ` : ''
    const tail = ` ${parts.join('  ')}`
    // Leave one column free: writing the last column makes some terminals wrap.
    const width = Math.min(40, (this.#stream.columns || 80) - 1 - label.length - tail.length - 2)
    let bar = ''
    if (total !== undefined && total > 0 && width >= 5) {
      const filled = Math.round((Math.min(this.#done, total) / total) * width)
      bar = `|${'#'.repeat(filled)}${'.'.repeat(width - filled)}|`
    }
    this.#stream.write(`\r${label}${bar}${tail}\x1b[K`)
  }
}

export function formatDuration(secs: number): string {
  const s = Math.max(0, Math.round(secs))
  const h = Math.floor(s / 3600)
  const m = Math.floor((s % 3600) / 60)
  const ss = String(s % 60).padStart(2, '0')
  return h > 0 ? `${h}:${String(m).padStart(2, '0')}:${ss}` : `${m}:${ss}`
}

function formatBytes(n: number): string {
  if (n < 1024) return `${Math.round(n)} B`
  if (n < 1024 ** 2) return `${(n / 1024).toFixed(1)} KiB`
  if (n < 1024 ** 3) return `${(n / 1024 ** 2).toFixed(1)} MiB`
  return `${(n / 1024 ** 3).toFixed(2)} GiB`
}
