#!/usr/bin/env node
/**
 * vlt-segment: segment an image file from the command line.
 *
 *   vlt-segment IMAGE "expression" [-e "another"]… [-o mask.png] [-f png|coco_rle|polygon] [--json]
 *
 * By default the model runs in this process: the service's own app (src/app.ts) is built with the
 * same configuration code as the server and the request goes to it through Fastify's inject, so
 * the answer is the one the service would give. With --url the same request goes to a running
 * service instead. Both go through the typed client (src/client), the only difference being the
 * transport. Progress and timings go to stderr; stdout carries only the JSON answer (--json).
 */
import { readFile, writeFile } from 'node:fs/promises'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import type { FastifyInstance } from 'fastify'
import { SegmentationClient, SegmentationError, type MaskFormat, type SegmentResponse } from '../client/index.js'
import { MASK_FORMATS } from '../image/mask-formats.js'

/** Exit codes, one per class of failure (README, `vlt-segment --help`). */
export const EXIT = {
  ok: 0,
  /** Anything unexpected, including the service's 500. */
  internal: 1,
  /** Bad arguments, unreadable image file, unwritable output, a model folder that does not load. */
  usage: 2,
  /** The service refused the input: 400, 406, 413, 415, 422. */
  input: 3,
  /** No answer in time or no capacity: 503 (after the retries), 504, timeout, connection failure. */
  unavailable: 4,
  /** 401 or 429 (an API key is missing, wrong, or over its rate). */
  access: 5,
} as const

const USAGE = `Usage: vlt-segment IMAGE EXPRESSION... [options]

Segments the object(s) the expression(s) refer to in IMAGE. Runs the model in this process
unless --url is given.

Options:
  -e, --expression TEXT   another expression (repeatable; positional ones count too)
  -o, --output FILE       png: the mask PNG (several expressions: FILE-1.png, FILE-2.png, ...);
                          coco_rle / polygon: the JSON answer
  -f, --format FORMAT     png (default), coco_rle or polygon
      --json              print the JSON answer on stdout (the default without -o)
  -t, --threshold X       mask threshold, 0-1 (default: the model's)
      --url URL           send the request to a running service instead (e.g. http://localhost:8080)
      --api-key KEY       bearer key for --url (default: $VLT_API_KEY)
      --timeout S         seconds per attempt (default 60)
      --retries N         retries after 503/429, honouring Retry-After (default 3)
      --model DIR         model folder for in-process runs (default: $MODEL_PATH, else the packaged
                          models/vlt-refshapes-int8)
  -q, --quiet             no progress on stderr
  -h, --help              this text

Exit codes: 0 done; 1 unexpected error (or the service's 500); 2 usage (arguments, files, model
folder); 3 input refused by the service (400, 406, 413, 415, 422); 4 unavailable (503 after
retries, 504, timeout, no connection); 5 access (401, 429).
`

class UsageError extends Error {}

interface Args {
  image: string
  expressions: string[]
  output?: string
  format: MaskFormat
  json: boolean
  threshold?: number
  url?: string
  apiKey?: string
  timeoutMs: number
  retries: number
  model?: string
  quiet: boolean
}

function parse (argv: string[]): Args | 'help' {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      expression: { type: 'string', short: 'e', multiple: true },
      output: { type: 'string', short: 'o' },
      format: { type: 'string', short: 'f' },
      json: { type: 'boolean' },
      threshold: { type: 'string', short: 't' },
      url: { type: 'string' },
      'api-key': { type: 'string' },
      timeout: { type: 'string' },
      retries: { type: 'string' },
      model: { type: 'string' },
      quiet: { type: 'boolean', short: 'q' },
      help: { type: 'boolean', short: 'h' },
    },
  })
  if (values.help === true) return 'help'
  const [image, ...rest] = positionals
  if (image === undefined) throw new UsageError('an IMAGE is needed')
  const expressions = [...rest, ...(values.expression ?? [])]
  if (expressions.length === 0) throw new UsageError('at least one EXPRESSION is needed')
  const format = values.format ?? 'png'
  if (!(MASK_FORMATS as readonly string[]).includes(format)) throw new UsageError(`--format must be one of ${MASK_FORMATS.join(', ')}, not ${JSON.stringify(format)}`)
  const number = (name: string, s: string | undefined, min: number, max: number): number | undefined => {
    if (s === undefined) return undefined
    const n = Number(s)
    if (s.trim() === '' || !Number.isFinite(n) || n < min || n > max) throw new UsageError(`--${name} must be a number from ${min} to ${max}, not ${JSON.stringify(s)}`)
    return n
  }
  return {
    image,
    expressions,
    output: values.output,
    format: format as MaskFormat,
    json: values.json === true || values.output === undefined,
    // Passed through as given: the service validates it and answers 400 like any client.
    threshold: values.threshold === undefined ? undefined : Number(values.threshold),
    url: values.url,
    apiKey: values['api-key'] ?? process.env.VLT_API_KEY,
    timeoutMs: (number('timeout', values.timeout, 0.001, 86_400) ?? 60) * 1000,
    retries: number('retries', values.retries, 0, 100) ?? 3,
    model: values.model,
    quiet: values.quiet === true,
  }
}

/** The service in this process, reached through the client as if over HTTP. */
async function inProcess (args: Args, log: (s: string) => void): Promise<{ fetch: typeof fetch, close: () => Promise<void> }> {
  const [{ buildApp }, { loadConfig, envSchema }] = await Promise.all([import('../app.js'), import('../config.js')])
  // the service's default model folder, found from the package root rather than the working directory
  const packaged = fileURLToPath(new URL(`../../${envSchema.properties.MODEL_PATH.default}`, import.meta.url))
  const env = {
    ...process.env,
    MODEL_PATH: args.model ?? process.env.MODEL_PATH ?? packaged,
    // One request: one worker with every core, no cache, no keys, the client's deadline.
    WORKERS: process.env.WORKERS ?? '1',
    FEATURE_CACHE_MB: process.env.FEATURE_CACHE_MB ?? '0',
    API_KEYS: '',
    REQUEST_TIMEOUT_MS: process.env.REQUEST_TIMEOUT_MS ?? String(Math.min(600_000, Math.round(args.timeoutMs))),
  }
  let app: FastifyInstance
  try {
    const config = loadConfig(env)
    const shown = path.relative(process.cwd(), config.modelPath)
    log(`loading ${shown === '' ? '.' : shown.startsWith('..') ? config.modelPath : shown} (${config.workers} worker × ${config.threadsPerWorker} threads)…`)
    const t0 = performance.now()
    app = buildApp(config)
    await app.ready()
    await app.segmenter.started
    log(`ready: ${app.segmenter.info.name}@${app.segmenter.info.version} on ${app.segmenter.provider()} in ${((performance.now() - t0) / 1000).toFixed(2)} s`)
  } catch (err) {
    throw new UsageError(`could not start the model: ${(err as Error).message}`)
  }
  const injectFetch = async (input: string | URL | Request, init?: RequestInit): Promise<Response> => {
    const url = new URL(input instanceof Request ? input.url : String(input))
    const res = await app.inject({
      method: (init?.method ?? 'GET') as 'GET' | 'POST',
      url: url.pathname + url.search,
      headers: Object.fromEntries(new Headers(init?.headers)),
      payload: init?.body as FormData | undefined,
    })
    const headers = new Headers()
    for (const [k, v] of Object.entries(res.headers)) if (v !== undefined) headers.set(k, Array.isArray(v) ? v.join(', ') : String(v))
    return new Response(new Uint8Array(res.rawPayload), { status: res.statusCode, headers })
  }
  return { fetch: injectFetch as typeof fetch, close: async () => { await app.close() } }
}

/** FILE for one mask, FILE-k.ext for several. */
const maskFile = (output: string, k: number, n: number): string => {
  if (n === 1) return output
  const ext = path.extname(output)
  return `${output.slice(0, output.length - ext.length)}-${k + 1}${ext}`
}

export async function main (argv: string[]): Promise<number> {
  let args: Args | 'help'
  try {
    args = parse(argv)
  } catch (err) {
    process.stderr.write(`vlt-segment: ${(err as Error).message}\n\n${USAGE}`)
    return EXIT.usage
  }
  if (args === 'help') { process.stdout.write(USAGE); return EXIT.ok }
  const a = args
  const log = (s: string): void => { if (!a.quiet) process.stderr.write(`vlt-segment: ${s}\n`) }

  let transport: { fetch?: typeof fetch, close: () => Promise<void> } = { close: async () => {} }
  try {
    let image: Buffer
    try {
      image = await readFile(a.image)
    } catch (err) {
      throw new UsageError(`cannot read ${a.image}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`)
    }
    if (a.url === undefined) transport = await inProcess(a, log)
    const client = new SegmentationClient({
      baseUrl: a.url ?? 'http://in-process',
      apiKey: a.apiKey,
      timeoutMs: a.timeoutMs,
      retries: a.retries,
      fetch: transport.fetch,
      onRetry: ({ attempt, status, code, waitMs }) => log(`${status} ${code}; retry ${attempt} of ${a.retries} in ${(waitMs / 1000).toFixed(0)} s`),
    })
    log(`${a.url !== undefined ? `POST ${a.url.replace(/\/+$/, '')}/segment` : 'segmenting'}: ${a.image}, ${a.expressions.length} expression${a.expressions.length === 1 ? '' : 's'}, format ${a.format}`)
    const t0 = performance.now()
    const body: SegmentResponse = await client.segment(image, a.expressions, { format: a.format, threshold: a.threshold, filename: path.basename(a.image) })
    const tm = body.timings_ms
    log(`answered in ${(performance.now() - t0).toFixed(0)} ms (service: decode ${tm.decode}, preprocess ${tm.preprocess}, queue ${tm.queue ?? 0}, inference ${tm.inference}, postprocess ${tm.postprocess}, total ${tm.total} ms)`)

    const written: string[] = []
    try {
      if (a.output !== undefined && a.format === 'png') {
        for (const [k, r] of body.results.entries()) {
          const file = maskFile(a.output, k, body.results.length)
          await writeFile(file, Buffer.from((r.mask as { png: string }).png, 'base64'))
          written[k] = file
        }
      } else if (a.output !== undefined) {
        await writeFile(a.output, JSON.stringify(body) + '\n')
      }
    } catch (err) {
      throw new UsageError(`cannot write ${a.output}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`)
    }
    for (const [k, r] of body.results.entries()) {
      const where = written[k] !== undefined ? ` → ${written[k]}` : ''
      log(`${JSON.stringify(r.expression)}: score ${r.score.toFixed(3)}, area ${r.area} px, bbox ${r.bbox === null ? 'none' : `[${r.bbox.join(', ')}] (${r.bbox_format})`}${where}`)
    }
    if (a.output !== undefined && a.format !== 'png') log(`wrote ${a.output}`)
    if (a.json) process.stdout.write(JSON.stringify(body) + '\n')
    return EXIT.ok
  } catch (err) {
    if (err instanceof UsageError) {
      process.stderr.write(`vlt-segment: ${err.message}\n`)
      return EXIT.usage
    }
    if (err instanceof SegmentationError) {
      process.stderr.write(`vlt-segment: ${err.code}${err.status > 0 ? ` (${err.status})` : ''}: ${err.message}\n`)
      return exitCode(err)
    }
    process.stderr.write(`vlt-segment: ${(err as Error).stack ?? String(err)}\n`)
    return EXIT.internal
  } finally {
    await transport.close()
  }
}

export function exitCode (err: SegmentationError): number {
  if (err.status === 0 || err.status === 503 || err.status === 504) return EXIT.unavailable
  if (err.status === 401 || err.status === 429) return EXIT.access
  if (err.status >= 400 && err.status < 500) return EXIT.input
  return EXIT.internal
}

// Run when executed (also through npm's bin link), not when imported by tests.
const self = fileURLToPath(import.meta.url)
const invoked = process.argv[1] !== undefined ? await import('node:fs').then((fs) => { try { return fs.realpathSync(process.argv[1]) } catch { return process.argv[1] } }) : ''
if (invoked === self) process.exitCode = await main(process.argv.slice(2))
