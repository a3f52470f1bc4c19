/**
 * Test helpers: build the real app around the fake model (real tokenizer, pre- and
 * post-processing, engine and routes; a deterministic fake in place of ONNX Runtime),
 * multipart bodies, and small generated images.
 */
import type { Test } from 'tap'
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import sharp from 'sharp'
import type { FastifyInstance, LightMyRequestResponse } from 'fastify'
import { buildApp } from '../src/app.js'
import { letterboxGeometry } from '../src/image/preprocess.js'
import { type Config, defaultConfig } from '../src/config.js'
import { createEngine, type Engine, type EngineHooks, type EngineLogger } from '../src/engine/engine.js'
import { engineModel, parseManifest } from '../src/model/manifest.js'
import type { FolderLoader } from '../src/model/repository.js'
import { createSegmenter, type SegmenterFactory } from '../src/model/segmenter.js'
import { FAKE_VOCAB, fakeModelJson } from './fixtures/fake-model.js'

export const FAKE_WORKER = new URL('./fixtures/fake-worker.ts', import.meta.url)
/** The shipped default model's folder (MODEL_PATH's default, from the repository root). */
export const DEFAULT_MODEL_DIR = path.resolve(new URL('..', import.meta.url).pathname, defaultConfig().modelPath)

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

/**
 * Loads a folder holding only a fake model.json (writeFakeModel) around the fake engine; its
 * `fake_worker` object becomes the fake worker's workerData (failStart, holdStart). `gate` is
 * handed to every worker (the 'hold' word and holdStart wait for it).
 */
export function fakeFolderLoader (config: Config, gate?: Int32Array): FolderLoader {
  return async (dir, hooks) => {
    const raw = JSON.parse(readFileSync(path.join(dir, 'model.json'), 'utf8'))
    const manifest = parseManifest(raw, dir)
    const engine = fakeEngine(config, { hooks, workerData: { ...raw.fake_worker, gate } })
    return createSegmenter({ manifest, vocab: FAKE_VOCAB, engine, maxImagePixels: config.maxImagePixels })
  }
}

/** A fake model folder: `root/name/version/model.json` (versioned) or `root/name/model.json` (flat). */
export function writeFakeModel (root: string, name: string, version: string, opts: { flat?: boolean, fakeWorker?: Record<string, unknown>, json?: Record<string, unknown> } = {}): string {
  const dir = opts.flat === true ? path.join(root, name) : path.join(root, name, version)
  mkdirSync(dir, { recursive: true })
  writeFileSync(path.join(dir, 'model.json'), JSON.stringify(fakeModelJson({ name, version, ...(opts.fakeWorker !== undefined ? { fake_worker: opts.fakeWorker } : {}), ...opts.json })))
  return dir
}

/** A gate for the fake worker's 'hold' and holdStart: closed until open() is called. */
export function gate (): { gate: Int32Array, open: () => void } {
  const g = new Int32Array(new SharedArrayBuffer(4))
  return { gate: g, open: () => { Atomics.store(g, 0, 1); Atomics.notify(g, 0) } }
}

/** A MODELS_DIR of fake models (`setup` writes it) behind the real app; the gate holds 'hold' requests. */
export interface FakeRepo { root: string, app: FastifyInstance, open: () => void }

export const ADMIN_KEY = 'admin-key'

export async function fakeRepo (t: Test, setup: (root: string) => void, config: Partial<Config> = {}, wait = true): Promise<FakeRepo> {
  const root = mkdtempSync(path.join(os.tmpdir(), 'vlt-models-'))
  t.teardown(() => rmSync(root, { recursive: true, force: true }))
  setup(root)
  const c = testConfig({ modelsDir: root, adminApiKeys: [ADMIN_KEY], ...config })
  const g = gate()
  const app = buildApp(c, { loadFolder: fakeFolderLoader(c, g.gate) })
  t.teardown(async () => { g.open(); await app.close() })
  await app.ready()
  if (wait) await app.models.started
  return { root, app, open: g.open }
}

/** POST /admin/reload with the admin key; its JSON (throws unless 200). */
export async function adminReload (app: FastifyInstance): Promise<any> {
  const res = await app.inject({ method: 'POST', url: '/admin/reload', headers: { authorization: `Bearer ${ADMIN_KEY}` } })
  if (res.statusCode !== 200) throw new Error(`reload answered ${res.statusCode}: ${res.payload}`)
  return res.json()
}

let repoImage: Promise<Buffer> | undefined

/** POST /segment with a small test image to `model` (a name or name@version; the default model when undefined). */
export async function segmentModel (app: FastifyInstance, model?: string, expression = 'the circle'): Promise<LightMyRequestResponse> {
  repoImage ??= rectImage(32, 32, { x: 4, y: 4, w: 8, h: 8 })
  return await app.inject({ method: 'POST', url: '/segment', payload: form({ image: await repoImage, expression, extra: model !== undefined ? [['model', model]] : [] }) })
}

/** GET /models as JSON. */
export const modelsOf = async (app: FastifyInstance): Promise<any> => (await app.inject('/models')).json()

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
