/**
 * The model repository: which model folders exist (scan), which version of each serves requests,
 * and rolling a changed version in without losing a request (reload).
 *
 * Layout of MODELS_DIR (docs/models.md): one folder per model, named after it, holding either
 *   <name>/<version>/model.json …   versioned: the highest version is served
 *   <name>/model.json …             flat: the version is model.json's
 * model.json's `name` must equal the folder's name and, in the versioned layout, its `version`
 * the version folder's name, so a model is called by one name everywhere. MODEL_PATH alone is a
 * repository of that one folder.
 *
 * A model's serving version is a Deployment: one segmenter, so its own engine (workers) and
 * golden check. Requests take a lease on the deployment they are routed to (acquire → release);
 * reload() loads a changed or added version in new workers, waits until every worker passed the
 * golden case, and only then routes new requests to it; the old deployment drains (its leased
 * requests finish on it) and its workers are closed. A version that fails to load or fails its
 * golden case is rejected (logged, counted) and the previous one keeps serving. A model whose
 * folder is gone stops taking requests, drains, and is closed.
 *
 * Every request of every model passes acquire(): a process-wide admission controller belongs in
 * front of it, not in the per-model engines.
 */
import { createHash } from 'node:crypto'
import { readdir, readFile, stat } from 'node:fs/promises'
import path from 'node:path'
import { ERR_NOT_READY, modelNotFound } from '../errors.js'
import type { EngineHooks, EngineLogger } from '../engine/engine.js'
import type { Segmenter } from './segmenter.js'

/** Folder and model names: usable in a URL path and in `name@version` as they are. */
export const MODEL_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]*$/

/** A model version found on disk, not loaded yet. */
export interface Candidate {
  name: string
  version: string
  /** Absent for a segmenter handed in by tests. */
  dir?: string
  /** Changes whenever a file of the version folder (or which folder serves) changes. */
  fingerprint: string
  /** Build its segmenter; the engine starts its workers in the background (segmenter.started). */
  load: (hooks: EngineHooks) => Promise<Segmenter>
}

/** A model folder that could not be read as a model (bad layout, bad model.json, name mismatch). */
export interface ScanProblem {
  name: string
  version?: string
  fingerprint: string
  reason: string
}

export interface ScanResult {
  candidates: Candidate[]
  problems: ScanProblem[]
}

export interface ModelSource {
  /** What the models are read from (for logs and GET /models). */
  readonly describe: string
  scan: () => Promise<ScanResult>
}

/** Builds the segmenter of one model folder (createSegmenterFromFolder; tests pass a fake); `id` is what the scan read from its model.json (for logs). */
export type FolderLoader = (dir: string, hooks: EngineHooks, id: { name: string, version: string }) => Promise<Segmenter>

/** Versions compare piece by piece on . - +, numerically where both pieces are numbers (1.10.0 > 1.9.2). */
export function compareVersions (a: string, b: string): number {
  const pa = a.split(/[.+-]/)
  const pb = b.split(/[.+-]/)
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const x = pa[i]
    const y = pb[i]
    if (x === undefined) return -1
    if (y === undefined) return 1
    const nx = /^\d+$/.test(x) ? Number(x) : NaN
    const ny = /^\d+$/.test(y) ? Number(y) : NaN
    const c = !Number.isNaN(nx) && !Number.isNaN(ny) ? nx - ny : x.localeCompare(y)
    if (c !== 0) return c < 0 ? -1 : 1
  }
  return 0
}

/** sha256 over model.json's text and the name, size and mtime of every file in the folder. */
export async function folderFingerprint (dir: string): Promise<string> {
  const hash = createHash('sha256').update(dir).update('\0')
  hash.update(await readFile(path.join(dir, 'model.json')))
  const entries = (await readdir(dir, { withFileTypes: true })).filter((e) => e.isFile()).map((e) => e.name).sort()
  for (const name of entries) {
    const s = await stat(path.join(dir, name)).catch(() => undefined)
    if (s !== undefined) hash.update(`\0${name}:${s.size}:${s.mtimeMs}`)
  }
  return hash.digest('hex')
}

async function readIdentity (dir: string): Promise<{ name: string, version: string }> {
  let raw: { name?: unknown, version?: unknown }
  try {
    raw = JSON.parse(await readFile(path.join(dir, 'model.json'), 'utf8'))
  } catch (err) {
    throw new Error(`model.json in ${path.basename(dir)} is not readable JSON (${(err as Error).message})`)
  }
  if (typeof raw.name !== 'string' || (typeof raw.version !== 'string' && typeof raw.version !== 'number')) throw new Error('model.json lacks name or version')
  return { name: raw.name, version: String(raw.version) }
}

const isFile = async (file: string): Promise<boolean> => (await stat(file).catch(() => undefined))?.isFile() === true

/** One model folder served alone (MODEL_PATH). */
export function folderSource (dir: string, loader: FolderLoader): ModelSource {
  const abs = path.resolve(dir)
  return {
    describe: abs,
    async scan () {
      // A folder that cannot be read is the loader's to report (it names the missing file).
      const id = await readIdentity(abs).catch(() => ({ name: path.basename(abs), version: '' }))
      const fingerprint = await folderFingerprint(abs).catch(() => `missing:${abs}`)
      return { candidates: [{ ...id, dir: abs, fingerprint, load: async (hooks) => await loader(abs, hooks, id) }], problems: [] }
    },
  }
}

/** MODELS_DIR: every model folder in it (layout above). */
export function repositorySource (root: string, loader: FolderLoader): ModelSource {
  const abs = path.resolve(root)
  return {
    describe: abs,
    async scan () {
      const candidates: Candidate[] = []
      const problems: ScanProblem[] = []
      let entries
      try {
        entries = await readdir(abs, { withFileTypes: true })
      } catch (err) {
        throw new Error(`MODELS_DIR ${abs} cannot be read (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`)
      }
      for (const entry of entries.sort((a, b) => a.name.localeCompare(b.name))) {
        // Hidden folders (.git, a copy in progress named .something) and plain files are not models.
        if (!entry.isDirectory() || entry.name.startsWith('.')) continue
        const name = entry.name
        const modelDir = path.join(abs, name)
        const problem = (reason: string, version?: string, fingerprint = `${modelDir}:${reason}`): void => { problems.push({ name, version, fingerprint, reason }) }
        if (!MODEL_NAME.test(name)) { problem(`the folder name ${JSON.stringify(name)} is not a model name (letters, digits, . _ -)`); continue }
        let dir = modelDir
        let version: string | undefined
        if (!(await isFile(path.join(modelDir, 'model.json')))) {
          const versions: string[] = []
          for (const v of await readdir(modelDir, { withFileTypes: true })) {
            if (v.isDirectory() && !v.name.startsWith('.') && await isFile(path.join(modelDir, v.name, 'model.json'))) versions.push(v.name)
          }
          if (versions.length === 0) { problem(`no model.json in ${name}/ nor in a version folder ${name}/<version>/`); continue }
          version = versions.sort(compareVersions).at(-1)!
          dir = path.join(modelDir, version)
        }
        let fingerprint: string
        try {
          fingerprint = await folderFingerprint(dir)
        } catch (err) {
          problem(`cannot read ${path.relative(abs, dir)} (${(err as Error).message})`, version)
          continue
        }
        let id: { name: string, version: string }
        try {
          id = await readIdentity(dir)
        } catch (err) {
          problem((err as Error).message, version, fingerprint)
          continue
        }
        if (id.name !== name) { problem(`model.json names the model ${JSON.stringify(id.name)}, its folder is ${JSON.stringify(name)}`, id.version, fingerprint); continue }
        if (version !== undefined && id.version !== version) { problem(`model.json says version ${JSON.stringify(id.version)}, its folder is ${name}/${version}/`, version, fingerprint); continue }
        const d = dir
        const found = { name, version: id.version }
        candidates.push({ ...found, dir: d, fingerprint, load: async (hooks) => await loader(d, hooks, found) })
      }
      return { candidates, problems }
    },
  }
}

/**
 * A segmenter built by the caller (tests): one model, nothing to rescan. Its name is known once it
 * is built, so its engine reports to hooks that forward to `hooksFor(name, version)` from then on.
 */
export function fixedSource (build: (hooks: EngineHooks) => Segmenter | Promise<Segmenter>, hooksFor: (name: string, version: string) => EngineHooks = () => ({})): ModelSource {
  let segmenter: Segmenter | undefined
  return {
    describe: 'fixed',
    async scan () {
      if (segmenter === undefined) {
        let target: EngineHooks = {}
        segmenter = await build({ onBatch: (rows) => target.onBatch?.(rows), onEncode: (images) => target.onEncode?.(images) })
        target = hooksFor(segmenter.info.name, segmenter.info.version)
      }
      const s = segmenter
      return { candidates: [{ name: s.info.name, version: s.info.version, fingerprint: 'fixed', load: async () => s }], problems: [] }
    },
  }
}

export type DeploymentState = 'loading' | 'ready' | 'unavailable' | 'draining'

export interface Deployment {
  name: string
  version: string
  dir?: string
  fingerprint: string
  segmenter: Segmenter
  loadedAt: Date
  /** Requests routed to this deployment and not finished. */
  leases: number
  /** Why its workers could not start (a model found at start; a reloaded version that fails is never routed to). */
  failed?: string
}

export interface Lease {
  deployment: Deployment
  segmenter: Segmenter
  /** Call once when the request is finished (answered or failed). */
  release: () => void
}

export interface Rejection { version?: string, reason: string, at: Date, fingerprint: string }

export interface ModelStatus {
  name: string
  default: boolean
  /** The serving version (absent while a removed model drains). */
  serving?: Deployment
  servingState?: DeploymentState
  /** A new version being loaded (its workers run the golden case). */
  loading?: { version: string, since: Date }
  draining: Deployment[]
  lastRejected?: Rejection
}

export type ReloadTrigger = 'start' | 'signal' | 'admin' | 'poll'

export interface ReloadOutcome {
  model: string
  version?: string
  /** loaded: a new version serves; rejected: it failed and the previous one (if any) still serves; removed: the model drains and closes. */
  result: 'loaded' | 'rejected' | 'removed' | 'unchanged'
  previous?: string
  reason?: string
}

export interface ModelEvents {
  /** A deployment was loaded (result loaded), rejected, or removed. */
  onReload?: (o: ReloadOutcome, trigger: ReloadTrigger) => void
  /** The hooks a new deployment's engine reports to (per-model metrics). */
  hooks?: (name: string, version: string) => EngineHooks
}

export interface ModelRegistry {
  readonly source: string
  /** Resolves when every model found at start passed its golden case; rejects with the first that failed. */
  readonly started: Promise<void>
  /** Load the models found at start (their workers start in the background; see `started`). Throws when one cannot be loaded. */
  start: () => Promise<void>
  /** The default model's name (DEFAULT_MODEL, else the first by name). */
  defaultName: () => string | undefined
  /** The serving segmenter of a model (default: the default model). */
  get: (name?: string) => Segmenter | undefined
  /**
   * Route a request: `ref` is a name, `name@version`, or undefined for the default model. 404 for
   * an unknown model or a version that does not serve; 503 while the model is not ready.
   */
  acquire: (ref?: string, version?: string) => Lease
  list: () => ModelStatus[]
  stateOf: (d: Deployment) => DeploymentState
  /** Every model serves (the default one included) and none is only starting. */
  isReady: () => boolean
  /** Some model can take a request. */
  anyReady: () => boolean
  /** Rescan and roll in what changed; one pass at a time (a poll while one runs is skipped). */
  reload: (trigger: ReloadTrigger) => Promise<ReloadOutcome[]>
  /** Drain and close everything (on shutdown). */
  close: () => Promise<void>
}

export interface RegistryOptions {
  source: ModelSource
  defaultModel?: string
  logger: EngineLogger
  events?: ModelEvents
}

export function createModelRegistry ({ source, defaultModel = '', logger, events = {} }: RegistryOptions): ModelRegistry {
  const models = new Map<string, ModelStatus>()
  let chain: Promise<unknown> = Promise.resolve()
  let busy = false
  let closing = false
  const drains = new Set<Promise<void>>()
  const drainWaiters = new Map<Deployment, () => void>()

  let resolveStarted!: () => void
  let rejectStarted!: (err: Error) => void
  const started = new Promise<void>((resolve, reject) => { resolveStarted = resolve; rejectStarted = reject })
  started.catch(() => {}) // observed by the caller

  const hooksFor = (name: string, version: string): EngineHooks => events.hooks?.(name, version) ?? {}

  function defaultName (): string | undefined {
    if (defaultModel !== '') return defaultModel
    return [...models.values()].filter((m) => m.serving !== undefined).map((m) => m.name).sort()[0]
  }

  function stateOf (d: Deployment): DeploymentState {
    const entry = models.get(d.name)
    if (entry?.serving !== d) return 'draining'
    if (d.segmenter.isReady()) return 'ready'
    return d.failed === undefined && d.segmenter.provider() === 'pending' ? 'loading' : 'unavailable'
  }

  function deployment (c: Candidate, segmenter: Segmenter): Deployment {
    return { name: c.name, version: segmenter.info.version, dir: c.dir, fingerprint: c.fingerprint, segmenter, loadedAt: new Date(), leases: 0 }
  }

  async function start (): Promise<void> {
    try {
      const { candidates, problems } = await source.scan()
      if (problems.length > 0) throw new Error(problems.map((p) => `model ${p.name}: ${p.reason}`).join('; '))
      if (candidates.length === 0) throw new Error(`no model folder in ${source.describe}`)
      for (const c of candidates) {
        const segmenter = await c.load(hooksFor(c.name, c.version))
        const d = deployment(c, segmenter)
        models.set(c.name, { name: c.name, default: false, serving: d, draining: [] })
        events.onReload?.({ model: c.name, version: d.version, result: 'loaded' }, 'start')
      }
      if (defaultModel !== '' && !models.has(defaultModel)) throw new Error(`DEFAULT_MODEL ${defaultModel} is not among the models (${[...models.keys()].join(', ')})`)
    } catch (err) {
      // The app will not start: stop the workers of the models loaded so far.
      await Promise.all([...models.values()].map(async (m) => await m.serving?.segmenter.close()))
      models.clear()
      throw err
    }
    Promise.all([...models.values()].map(async (m) => {
      const d = m.serving!
      try {
        await d.segmenter.started
      } catch (err) {
        d.failed = (err as Error).message
        logger.error({ model: d.name, version: d.version, reason: d.failed }, 'model could not be started')
        throw new Error(`model ${m.name}@${d.version}: ${d.failed}`)
      }
    })).then(() => resolveStarted(), rejectStarted)
  }

  function acquire (ref?: string, version?: string): Lease {
    let name = ref
    if (ref !== undefined && version === undefined) {
      const at = ref.lastIndexOf('@')
      if (at > 0) { name = ref.slice(0, at); version = ref.slice(at + 1) }
    }
    name ??= defaultName()
    const entry = name !== undefined ? models.get(name) : undefined
    const d = entry?.serving
    if (name === undefined || d === undefined) {
      throw modelNotFound(`Model ${JSON.stringify(name ?? '')} is not served (models: ${servingNames().join(', ') || 'none'})`, { model: name ?? '', available: servingNames() })
    }
    if (version !== undefined && version !== d.version) {
      throw modelNotFound(`Version ${JSON.stringify(version)} of model ${name} is not served (serving ${d.version})`, { model: name, version, serving: d.version })
    }
    if (!d.segmenter.isReady()) throw ERR_NOT_READY()
    d.leases++
    let released = false
    return {
      deployment: d,
      segmenter: d.segmenter,
      release () {
        if (released) return
        released = true
        d.leases--
        if (d.leases === 0) drainWaiters.get(d)?.()
      },
    }
  }

  function servingNames (): string[] {
    return [...models.values()].filter((m) => m.serving !== undefined).map((m) => `${m.name}@${m.serving!.version}`)
  }

  /** Stop routing to `d` (already done by the caller), wait for its leases, close its engine. */
  function drain (d: Deployment, why: string): void {
    const entry = models.get(d.name)
    entry?.draining.push(d)
    const t0 = performance.now()
    logger.info({ model: d.name, version: d.version, leases: d.leases, why }, 'model version draining')
    const p = (async () => {
      if (d.leases > 0) await new Promise<void>((resolve) => drainWaiters.set(d, resolve))
      drainWaiters.delete(d)
      await d.segmenter.close()
      const e = models.get(d.name)
      if (e !== undefined) {
        e.draining = e.draining.filter((x) => x !== d)
        if (e.serving === undefined && e.loading === undefined && e.draining.length === 0) models.delete(d.name)
      }
      logger.info({ model: d.name, version: d.version, drainMs: Math.round(performance.now() - t0) }, 'model version closed')
    })()
    drains.add(p)
    void p.catch((err) => logger.error({ model: d.name, version: d.version, reason: (err as Error).message }, 'closing a model version failed')).finally(() => drains.delete(p))
  }

  function reject (entry: ModelStatus, r: Rejection, trigger: ReloadTrigger, previous?: string): ReloadOutcome {
    entry.lastRejected = r
    const o: ReloadOutcome = { model: entry.name, version: r.version, result: 'rejected', reason: r.reason, previous }
    logger.error({ model: entry.name, version: r.version, reason: r.reason, trigger, keeps: previous ?? null }, previous !== undefined ? 'model version rejected; the previous version keeps serving' : 'model rejected')
    events.onReload?.(o, trigger)
    return o
  }

  function entryFor (name: string): ModelStatus {
    let e = models.get(name)
    if (e === undefined) {
      e = { name, default: false, draining: [] }
      models.set(name, e)
    }
    return e
  }

  /** Forget an entry that never served and has nothing in flight (a new model that was rejected). */
  function prune (name: string): void {
    const e = models.get(name)
    if (e !== undefined && e.serving === undefined && e.loading === undefined && e.draining.length === 0 && e.lastRejected === undefined) models.delete(name)
  }

  async function pass (trigger: ReloadTrigger): Promise<ReloadOutcome[]> {
    const out: ReloadOutcome[] = []
    const { candidates, problems } = await source.scan()
    // A poll does not retry what it already rejected; an explicit trigger does.
    const retry = trigger !== 'poll'
    const seen = new Set([...candidates.map((c) => c.name), ...problems.map((p) => p.name)])
    for (const p of problems) {
      const entry = entryFor(p.name)
      if (!retry && entry.lastRejected?.fingerprint === p.fingerprint) continue
      out.push(reject(entry, { version: p.version, reason: p.reason, at: new Date(), fingerprint: p.fingerprint }, trigger, entry.serving?.version))
    }
    for (const c of candidates) {
      if (closing) break
      const entry = entryFor(c.name)
      const old = entry.serving
      if (old?.fingerprint === c.fingerprint) { out.push({ model: c.name, version: old.version, result: 'unchanged' }); continue }
      if (!retry && entry.lastRejected?.fingerprint === c.fingerprint) continue
      entry.loading = { version: c.version, since: new Date() }
      logger.info({ model: c.name, version: c.version, previous: old?.version ?? null, trigger }, 'loading model version')
      let segmenter: Segmenter | undefined
      try {
        segmenter = await c.load(hooksFor(c.name, c.version))
        await segmenter.started
      } catch (err) {
        entry.loading = undefined
        await segmenter?.close().catch(() => {})
        out.push(reject(entry, { version: c.version, reason: (err as Error).message, at: new Date(), fingerprint: c.fingerprint }, trigger, old?.version))
        continue
      }
      entry.loading = undefined
      if (closing) { await segmenter.close(); break }
      const d = deployment(c, segmenter)
      // From here new requests go to d; those holding a lease on `old` finish there.
      entry.serving = d
      entry.lastRejected = undefined
      const o: ReloadOutcome = { model: c.name, version: d.version, result: 'loaded', previous: old?.version }
      logger.info({ model: c.name, version: d.version, previous: old?.version ?? null, trigger, provider: segmenter.provider() }, 'model version serving')
      events.onReload?.(o, trigger)
      out.push(o)
      if (old !== undefined) drain(old, `replaced by ${d.version}`)
    }
    for (const entry of [...models.values()]) {
      if (seen.has(entry.name) || entry.serving === undefined) continue
      const d = entry.serving
      entry.serving = undefined
      entry.lastRejected = undefined
      const o: ReloadOutcome = { model: entry.name, version: d.version, result: 'removed' }
      events.onReload?.(o, trigger)
      out.push(o)
      drain(d, 'its folder is gone')
    }
    for (const [name, entry] of [...models]) {
      if (seen.has(name)) continue
      entry.lastRejected = undefined
      prune(name)
    }
    return out
  }

  async function reload (trigger: ReloadTrigger): Promise<ReloadOutcome[]> {
    if (closing) return []
    if (trigger === 'poll' && busy) return []
    const run = chain.then(async () => {
      busy = true
      try {
        return await pass(trigger)
      } finally {
        busy = false
      }
    })
    chain = run.catch(() => {})
    return await run
  }

  function isReady (): boolean {
    const serving = [...models.values()].filter((m) => m.serving !== undefined)
    const def = defaultName()
    return !closing && serving.length > 0 && serving.every((m) => m.serving!.segmenter.isReady()) &&
      def !== undefined && models.get(def)?.serving !== undefined
  }

  async function close (): Promise<void> {
    closing = true
    await chain
    for (const entry of models.values()) {
      if (entry.serving !== undefined) {
        const d = entry.serving
        entry.serving = undefined
        drain(d, 'shutting down')
      }
    }
    while (drains.size > 0) await Promise.all([...drains])
  }

  return {
    source: source.describe,
    started,
    start,
    defaultName,
    get: (name) => models.get(name ?? defaultName() ?? '')?.serving?.segmenter,
    acquire,
    list: () => [...models.values()].sort((a, b) => a.name.localeCompare(b.name)).map((m) => ({ ...m, default: m.name === defaultName(), servingState: m.serving !== undefined ? stateOf(m.serving) : undefined })),
    stateOf,
    isReady,
    anyReady: () => !closing && [...models.values()].some((m) => m.serving?.segmenter.isReady() === true),
    reload,
    close,
  }
}
