/**
 * Test helpers: build the real app around the fake model (real tokenizer, pre- and
 * post-processing, engine and routes; a deterministic fake in place of ONNX Runtime),
 * multipart bodies, and small generated images.
 */
import type { Test } from 'tap'
import sharp from 'sharp'
import type { FastifyInstance } from 'fastify'
import { buildApp } from '../src/app.js'
import { letterboxGeometry } from '../src/image/preprocess.js'
import { type Config, defaultConfig } from '../src/config.js'
import { createEngine, type Engine, type EngineHooks, type EngineLogger } from '../src/engine/engine.js'
import { engineModel, parseManifest } from '../src/model/manifest.js'
import { createSegmenter, type SegmenterFactory } from '../src/model/segmenter.js'
import { FAKE_VOCAB, fakeModelJson } from './fixtures/fake-model.js'

export const FAKE_WORKER = new URL('./fixtures/fake-worker.ts', import.meta.url)

export const silentLogger: EngineLogger = { info () {}, warn () {}, error () {} }

export interface FakeOptions {
  config?: Partial<Config>
  /** Extra workerData for the fake worker (e.g. failStart). */
  workerData?: Record<string, unknown>
  logger?: EngineLogger
  /** Observers of the engine, besides the app's metrics. */
  hooks?: EngineHooks
}

/** Both observers see every event. */
export function bothHooks (a: EngineHooks = {}, b: EngineHooks = {}): EngineHooks {
  return {
    onBatch: (rows) => { a.onBatch?.(rows); b.onBatch?.(rows) },
    onEncode: (images) => { a.onEncode?.(images); b.onEncode?.(images) },
  }
}

export function fakeEngine (config: Config, opts: FakeOptions = {}): Engine {
  const manifest = parseManifest(fakeModelJson(), '/nonexistent')
  return createEngine({
    model: { ...engineModel(manifest, { modelFile: '/nonexistent/model.onnx' }), ...opts.workerData },
    settings: config,
    hooks: opts.hooks,
    logger: opts.logger ?? silentLogger,
    workerUrl: FAKE_WORKER,
    restartDelayMs: 50,
  })
}

/** The segmenter of the fake model, for buildApp (the app adds its metrics' hooks). */
export function fakeSegmenter (config: Config, opts: FakeOptions = {}): SegmenterFactory {
  const manifest = parseManifest(fakeModelJson(), '/nonexistent')
  return (hooks, budget) => createSegmenter({ manifest, vocab: FAKE_VOCAB, engine: fakeEngine(config, { ...opts, hooks: bothHooks(hooks, opts.hooks) }), maxImagePixels: config.maxImagePixels, budget })
}

export const testConfig = (overrides: Partial<Config> = {}): Config =>
  defaultConfig({ workers: 1, threadsPerWorker: 1, maxBatchWaitMs: 0, logLevel: 'silent', ...overrides })

/** The app around the fake model, ready (workers started), closed on teardown. */
export async function build (t: Test, opts: FakeOptions & { wait?: boolean } = {}): Promise<FastifyInstance> {
  const config = testConfig(opts.config)
  const app = buildApp(config, { segmenter: fakeSegmenter(config, opts) })
  t.teardown(() => app.close())
  await app.ready()
  if (opts.wait !== false) await app.segmenter.started
  return app
}

export interface FormFields {
  image?: Buffer | { data: Buffer, filename?: string, type?: string }
  expression?: string | string[]
  threshold?: string
  extra?: Array<[string, string]>
}

export function form (fields: FormFields): FormData {
  const fd = new FormData()
  if (fields.image !== undefined) {
    const img = Buffer.isBuffer(fields.image) ? { data: fields.image } : fields.image
    fd.append('image', new Blob([new Uint8Array(img.data)], { type: img.type ?? 'application/octet-stream' }), img.filename ?? 'image.png')
  }
  const exprs = fields.expression === undefined ? [] : Array.isArray(fields.expression) ? fields.expression : [fields.expression]
  for (const e of exprs) fd.append('expression', e)
  if (fields.threshold !== undefined) fd.append('threshold', fields.threshold)
  for (const [k, v] of fields.extra ?? []) fd.append(k, v)
  return fd
}

/** A black image with a white rectangle: the fake model segments the rectangle. */
export async function rectImage (width: number, height: number, rect: { x: number, y: number, w: number, h: number }, format: 'png' | 'jpeg' = 'png'): Promise<Buffer> {
  const raw = Buffer.alloc(width * height * 3)
  for (let y = rect.y; y < rect.y + rect.h; y++) {
    for (let x = rect.x; x < rect.x + rect.w; x++) raw.fill(255, (y * width + x) * 3, (y * width + x) * 3 + 3)
  }
  const img = sharp(raw, { raw: { width, height, channels: 3 } })
  return format === 'png' ? await img.png().toBuffer() : await img.jpeg({ quality: 95 }).toBuffer()
}

/** Decode a mask PNG to { width, height, channels, data }. */
export async function readMask (png: Buffer): Promise<{ width: number, height: number, channels: number, data: Buffer }> {
  const meta = await sharp(png).metadata()
  const { data, info } = await sharp(png).toColourspace('b-w').raw().toBuffer({ resolveWithObject: true })
  return { width: info.width, height: info.height, channels: meta.channels ?? 0, data }
}

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

/** Poll `fn` every 10 ms until it holds; throw after `ms`. */
export async function until (fn: () => boolean, ms = 30_000): Promise<void> {
  const end = Date.now() + ms
  while (!fn()) {
    if (Date.now() > end) throw new Error('timed out')
    await sleep(10)
  }
}

/** An engine job for the fake model: a blank 32×32 image and `rows` token rows of one vocabulary word. */
export const FAKE_JOB_SIZE = 32
export const fakeJob = (word: string, rows = 1) => ({
  image: new Float32Array(3 * FAKE_JOB_SIZE * FAKE_JOB_SIZE),
  tokens: Array.from({ length: rows }, () => [FAKE_VOCAB.indexOf(word), 0, 0, 0, 0]),
  geometry: letterboxGeometry(FAKE_JOB_SIZE, FAKE_JOB_SIZE, FAKE_JOB_SIZE),
  threshold: 0.35,
})

/** A deadline `ms` from now. */
export const later = (ms: number): number => Date.now() + ms

/** Collect a child process's pino output: one parsed object per JSON line ({ msg } for any other line). */
export function jsonLines (stream: NodeJS.ReadableStream): any[] {
  const lines: any[] = []
  let buf = ''
  stream.on('data', (c: Buffer) => {
    buf += c.toString()
    const parts = buf.split('\n')
    buf = parts.pop()!
    for (const p of parts) if (p.trim() !== '') { try { lines.push(JSON.parse(p)) } catch { lines.push({ msg: p }) } }
  })
  return lines
}
