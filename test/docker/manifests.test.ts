/**
 * Static checks of docker/: both Dockerfiles lint clean (dockerfile-utils) and follow the service
 * (port, health paths, entry point, environment names and values), .dockerignore sends what they
 * copy, compose.yaml is consistent (and `docker compose config -q` accepts it where Docker is
 * installed), and the Kubernetes manifests validate against the Kubernetes schemas
 * (kubernetes-models) and agree with each other and with the service. No Docker needed.
 * The real container test is docker/test.sh (npm run test:docker).
 */
import t from 'tap'
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { spawnSync } from 'node:child_process'
import { parse as parseYaml, parseAllDocuments } from 'yaml'
import dockerfileUtils from 'dockerfile-utils'
import { Deployment } from 'kubernetes-models/apps/v1'
import { Service } from 'kubernetes-models/v1'
import { HorizontalPodAutoscaler } from 'kubernetes-models/autoscaling/v2'
import { PodDisruptionBudget } from 'kubernetes-models/policy/v1'
import { envSchema, loadConfig } from '../../src/config.js'

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..')
const DOCKER = path.join(ROOT, 'docker')
const read = (...p: string[]): string => readFileSync(path.join(ROOT, ...p), 'utf8')

const SERVICE_VARS = new Set(Object.keys(envSchema.properties))
const DEFAULT_PORT = envSchema.properties.PORT.default
const DEFAULT_GRACE_MS = envSchema.properties.SHUTDOWN_GRACE_MS.default
// the service's default model folder (MODEL_PATH's default), and the float model it is quantized from
const DEFAULT_MODEL_DIR = envSchema.properties.MODEL_PATH.default
const FLOAT_MODEL_DIR = 'models/vlt-refshapes'
/** The Node.js major the project runs on: .nvmrc, package.json engines and the images agree. */
const NODE_MAJOR = read('.nvmrc').trim()

/** Every `app.get('/x'` / `app.post('/x'` route registered under src/routes. */
function serviceRoutes (): Map<string, string> {
  const routes = new Map<string, string>()
  const dir = path.join(ROOT, 'src', 'routes')
  for (const f of readdirSync(dir).filter((f) => f.endsWith('.ts'))) {
    for (const m of readFileSync(path.join(dir, f), 'utf8').matchAll(/\bapp\.(get|post|put|delete|route)\(\s*['"`](\/[^'"`]*)['"`]/g)) {
      routes.set(m[2], m[1].toUpperCase())
    }
  }
  return routes
}
const ROUTES = serviceRoutes()

/** Resolve compose-style `${VAR:-default}` / `${VAR-default}` / `${VAR}` with an empty environment. */
function interpolate (v: unknown): string {
  return String(v).replace(/\$\{([A-Z0-9_]+)(?::?-([^}]*))?\}/g, (_m, _name: string, def?: string) => def ?? '')
}

/** Kubernetes / compose CPU quantity → cores ("2", "1.5", "1500m"). */
function cpuCores (q: unknown): number {
  const s = String(q)
  return s.endsWith('m') ? Number(s.slice(0, -1)) / 1000 : Number(s)
}
/** Memory quantity → bytes ("1Gi", "1536Mi", "512M", "1g"). */
function bytes (q: unknown): number {
  const m = /^(\d+(?:\.\d+)?)\s*([KMGT]i?|[kmgt]b?|[KMGT]B)?$/.exec(String(q).trim())
  if (m === null) throw new Error(`not a memory quantity: ${String(q)}`)
  const unit = (m[2] ?? '').toLowerCase().replace(/b$/, '')
  const pow = { '': 0, k: 1, m: 2, g: 3, t: 4 }[unit.replace('i', '')] ?? NaN
  return Number(m[1]) * (unit.endsWith('i') ? 1024 : (m[2] ?? '').length > 0 && /^[a-z]/.test(m[2] ?? '') ? 1024 : 1000) ** pow
}
/** "30s", "1m30s", "500ms" → seconds. */
function seconds (d: unknown): number {
  let total = 0
  const s = String(d)
  for (const m of s.matchAll(/(\d+(?:\.\d+)?)(ms|h|m|s)/g)) total += Number(m[1]) * ({ ms: 0.001, s: 1, m: 60, h: 3600 }[m[2]] ?? NaN)
  return total
}

// ---------------------------------------------------------------------------------------------
// Dockerfiles

interface Instruction { keyword: string, args: string, line: number }
interface Stage { base: string, name?: string, instructions: Instruction[] }

function parseDockerfile (text: string): { args: Map<string, string>, stages: Stage[] } {
  const args = new Map<string, string>()
  const stages: Stage[] = []
  const lines = text.split('\n')
  for (let i = 0; i < lines.length; i++) {
    const start = i
    let line = lines[i]
    if (/^\s*(#|$)/.test(line)) continue
    while (/\\\s*$/.test(line) && i + 1 < lines.length) {
      i++
      if (/^\s*#/.test(lines[i])) continue
      line = line.replace(/\\\s*$/, ' ') + lines[i]
    }
    const m = /^\s*([A-Za-z]+)\s+(.*)$/.exec(line)
    if (m === null) continue
    const ins = { keyword: m[1].toUpperCase(), args: m[2].trim(), line: start + 1 }
    if (ins.keyword === 'FROM') {
      const f = /^(?:--\S+\s+)*(\S+)(?:\s+AS\s+(\S+))?$/i.exec(ins.args)
      stages.push({ base: f?.[1] ?? '', name: f?.[2], instructions: [] })
    } else if (stages.length === 0 && ins.keyword === 'ARG') {
      const [k, v] = ins.args.split('=')
      args.set(k, v ?? '')
    } else if (stages.length > 0) {
      stages[stages.length - 1].instructions.push(ins)
    }
  }
  return { args, stages }
}

const execForm = (args: string): string[] => JSON.parse(args) as string[]
/** ENV k=v k2=v2 (values without spaces, as written here) */
function envOf (stage: Stage): Record<string, string> {
  const env: Record<string, string> = {}
  for (const ins of stage.instructions.filter((i) => i.keyword === 'ENV')) {
    for (const m of ins.args.matchAll(/([A-Za-z_][A-Za-z0-9_]*)=("[^"]*"|\S*)/g)) env[m[1]] = m[2].replace(/^"|"$/g, '')
  }
  return env
}

/** .dockerignore semantics: patterns in order, the last match wins, `!` re-includes, a match on a parent folder covers its contents. */
function dockerignore (text: string): (p: string) => boolean {
  const rules = text.split('\n').map((l) => l.trim()).filter((l) => l !== '' && !l.startsWith('#')).map((l) => {
    const negate = l.startsWith('!')
    const pattern = (negate ? l.slice(1) : l).replace(/^\/+/, '').replace(/\/+$/, '')
    const re = pattern.split('/').map((seg) => seg === '**'
      ? '.*'
      : seg.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '[^/]*').replace(/\?/g, '[^/]')).join('/').replace(/\.\*\//g, '(?:.*/)?')
    return { negate, re: new RegExp(`^${re}(?:/.*)?$`) }
  })
  return (p: string) => {
    let excluded = false
    for (const r of rules) if (r.re.test(p)) excluded = !r.negate
    return excluded
  }
}

const DOCKERFILES = [
  // the CPU image bakes in the default (INT8) model; the GPU image the float one (Dockerfile.cuda says why)
  { file: 'Dockerfile', providers: 'cpu', node: 'node:24-trixie-slim', model: DEFAULT_MODEL_DIR },
  { file: 'Dockerfile.cuda', providers: 'cuda,cpu', node: 'node:24-trixie-slim', model: FLOAT_MODEL_DIR },
] as const

t.test('dockerfile-utils catches errors (control)', async (t) => {
  t.ok(dockerfileUtils.validate('FROM node:24-trixie-slim\nEXPOZE 8080\nHEALTHCHECK --interval=1x CMD true\n').length >= 2)
})

for (const { file, providers, node, model } of DOCKERFILES) {
  t.test(`docker/${file}`, async (t) => {
    const text = read('docker', file)
    const problems = dockerfileUtils.validate(text).map((d) => `${d.range.start.line + 1}: ${d.message}`)
    t.strictSame(problems, [], 'dockerfile-utils lint is clean')

    const { args, stages } = parseDockerfile(text)
    t.equal(args.get('NODE_IMAGE'), node, `NODE_IMAGE=${node}`)
    t.match(args.get('NODE_IMAGE') ?? '', new RegExp(`^node:${NODE_MAJOR}-(trixie|bookworm)-slim$`), `Node ${NODE_MAJOR} (.nvmrc) on Debian slim`)
    const names = new Set(stages.map((s) => s.name).filter((n) => n !== undefined))
    // FROM a base image argument, an earlier stage, or a stage chosen by an argument (every value of
    // it naming a stage: cuda-libs-${CUDA_LIBS} with CUDA_LIBS base or pypi)
    const choices: Record<string, string[]> = { CUDA_LIBS: ['base', 'pypi'] }
    for (const s of stages) {
      const chosen = /^(.*)\$\{([A-Z_]+)\}$/.exec(s.base)
      if (s.base === '${NODE_IMAGE}' || s.base === '${CUDA_IMAGE}' || names.has(s.base)) t.pass(`FROM ${s.base}`)
      else if (chosen !== null && choices[chosen[2]] !== undefined) {
        t.ok(choices[chosen[2]].includes(args.get(chosen[2]) ?? ''), `${chosen[2]} defaults to one of ${choices[chosen[2]].join(', ')}`)
        for (const v of choices[chosen[2]]) t.ok(names.has(chosen[1] + v), `FROM ${s.base}: stage ${chosen[1] + v} exists`)
      } else t.fail(`FROM ${s.base}`)
    }
    t.ok(stages.length >= 3, 'multi-stage')
    const final = stages[stages.length - 1]
    const all = stages.flatMap((s) => s.instructions)
    const runs = all.filter((i) => i.keyword === 'RUN').map((i) => i.args).join('\n')
    const only = (k: string): Instruction[] => final.instructions.filter((i) => i.keyword === k)

    // dependencies and build
    t.match(runs, /\bnpm ci\b[^\n]*--ignore-scripts/, 'npm ci without install scripts')
    t.match(runs, /\bnpm run build\b/, 'TypeScript compiled in the image')
    t.match(runs, /\bnpm prune --omit=dev\b/, 'production dependencies only')
    t.match(runs, /prune-binaries\.mjs/, 'other platforms\' native binaries removed')
    t.notMatch(runs, /\bnpm (install|i) /, 'no unlocked installs')

    // runtime stage
    const user = only('USER').at(-1)?.args ?? ''
    t.match(user, /^[1-9]\d*(:\d+)?$/, `non-root numeric USER (${user})`)
    t.strictSame(only('EXPOSE').map((i) => i.args), [String(DEFAULT_PORT)], `EXPOSE ${DEFAULT_PORT}`)
    const entry = execForm(only('ENTRYPOINT').at(-1)?.args ?? '[]')
    t.match(entry[0] ?? '', /\btini$/, 'tini is PID 1 and forwards signals')
    const cmd = execForm(only('CMD').at(-1)?.args ?? '[]')
    t.equal(cmd[0], 'node', 'CMD runs node directly (not npm: npm start would rebuild)')
    t.equal(cmd.at(-1), JSON.parse(read('package.json')).main, 'CMD runs package.json "main"')
    const health = only('HEALTHCHECK').at(-1)?.args ?? ''
    t.match(health, /\/readyz/, 'HEALTHCHECK asks /readyz')
    t.notMatch(health, /\b(curl|wget)\b/, 'HEALTHCHECK needs no curl')
    t.match(health, /\bCMD \["node", "-e"/, 'HEALTHCHECK in exec form with node')
    t.ok(ROUTES.has('/readyz'), 'the service has /readyz')

    const env = envOf(final)
    t.equal(env.EXECUTION_PROVIDERS, providers, `EXECUTION_PROVIDERS=${providers}`)
    t.equal(env.MODEL_PATH, `/app/${model}`, `MODEL_PATH: ${model}, baked in`)
    t.equal(Number(env.PORT ?? DEFAULT_PORT), DEFAULT_PORT)
    const serviceEnv = Object.fromEntries(Object.entries(env).filter(([k]) => SERVICE_VARS.has(k)))
    t.doesNotThrow(() => loadConfig(serviceEnv, 2), 'the image environment is a valid service config')
    const copies = final.instructions.filter((i) => i.keyword === 'COPY').map((i) => i.args).join('\n')
    t.ok(existsSync(path.join(ROOT, model, 'model.json')), `${model} is in the repository`)
    for (const needed of [`${model} ./${model}`, 'package.json', 'openapi.yaml', '/app/dist', '/app/node_modules']) {
      t.match(copies, needed, `runtime stage gets ${needed}`)
    }

    if (file === 'Dockerfile.cuda') {
      // The provider libraries (onnxruntime-gpu 1.30 wheel) are built for CUDA 13 and cuDNN 9.
      t.match(args.get('CUDA_IMAGE') ?? '', /^nvidia\/cuda:13\.\d+\.\d+-cudnn-runtime-ubuntu\d/, 'CUDA 13 + cuDNN runtime base')
      t.match(text, /R580 branch or newer \(580\.65\.06\+/, 'the driver floor is stated')
      t.equal(final.base, '${CUDA_IMAGE}')
      t.notMatch(text, /ONNXRUNTIME_NODE_INSTALL=(?!skip\b)|onnxruntime-node\/script\/install/, 'not onnxruntime-node\'s own download')
      t.equal(envOf(stages[0]).ONNXRUNTIME_NODE_INSTALL, 'skip', 'onnxruntime-node\'s own switch skips its download')
      t.match(runs, /packages\['node_modules\/onnxruntime-node'\]\.version/, 'the provider version is onnxruntime-node\'s, from package-lock.json')
      t.match(runs, /"onnxruntime-gpu==\$version"/, 'the onnxruntime-gpu wheel of that version')
      const finalRuns = final.instructions.filter((i) => i.keyword === 'RUN').map((i) => i.args).join('\n')
      t.match(finalRuns, /check-cuda-libs \/app\/node_modules\/onnxruntime-node\/bin\/napi-v6\/linux\/x64 \$\{RUNTIME_SONAMES\}/, 'the runtime stage runs the ldd check on the provider libraries')
      const runtimeArgs = final.instructions.filter((i) => i.keyword === 'ARG').map((i) => i.args)
      t.ok(runtimeArgs.includes('RUNTIME_SONAMES=libcudnn.so.9'), 'cuDNN (opened at run time) must be there by default')
      const pypi = stages.find((st) => st.name === 'cuda-libs-pypi')?.instructions.find((i) => i.keyword === 'ARG')?.args ?? ''
      const pins = /^CUDA_PYPI_PACKAGES="(.*)"$/.exec(pypi)?.[1].split(' ') ?? []
      for (const [pkg, major] of [['nvidia-cuda-runtime', '13'], ['nvidia-cublas', '13'], ['nvidia-curand', '10'], ['nvidia-cudnn-cu13', '9']]) {
        t.ok(pins.some((p) => new RegExp(`^${pkg}==${major}\\.[\\d.]+$`).test(p)), `CUDA_PYPI_PACKAGES pins ${pkg} ${major}.x`)
      }
      t.equal(envOf(final).NVIDIA_DRIVER_CAPABILITIES, 'compute,utility')
    } else {
      t.equal(final.base, '${NODE_IMAGE}')
      t.notMatch(text, /cuda12/, 'no CUDA download on the CPU image')
      t.equal(envOf(stages[0]).ONNXRUNTIME_NODE_INSTALL, 'skip', 'onnxruntime-node\'s own switch skips its download')
    }
  })
}

t.test('Node.js version and install scripts', async (t) => {
  const pkg = JSON.parse(read('package.json'))
  t.match(NODE_MAJOR, /^\d+$/, '.nvmrc names a major version')
  t.equal(pkg.engines.node, `>=${NODE_MAJOR}`, 'package.json engines follow .nvmrc')
  t.equal(pkg.devDependencies['@types/node'].replace(/^\^/, '').split('.')[0], NODE_MAJOR, '@types/node of the same major')
  // npm runs no dependency install script unless allowScripts approves it; onnxruntime-node's
  // would download the CUDA provider (its CPU binaries are in the package).
  t.equal(pkg.allowScripts?.['onnxruntime-node'], false, 'onnxruntime-node\'s download script is denied')
  // npm warns on every command about a key it does not know
  const keys = read('.npmrc').split('\n').map((l) => l.trim()).filter((l) => l !== '' && !l.startsWith('#')).map((l) => l.split('=')[0].trim())
  t.notOk(keys.includes('onnxruntime-node-install'), '.npmrc holds no key npm does not know')
})

t.test('.dockerignore sends what the Dockerfiles copy, and little else', async (t) => {
  const ignored = dockerignore(read('.dockerignore'))
  for (const { file } of DOCKERFILES) {
    const { stages } = parseDockerfile(read('docker', file))
    for (const ins of stages.flatMap((s) => s.instructions).filter((i) => i.keyword === 'COPY' && !i.args.includes('--from'))) {
      const sources = ins.args.replace(/--\S+\s+/g, '').split(/\s+/).slice(0, -1)
      for (const src of sources) {
        const abs = path.join(ROOT, src)
        if (src.startsWith('models/') && !existsSync(abs)) continue // trained artefact, not in git
        t.ok(existsSync(abs), `${file}:${ins.line} ${src} exists`)
        const files = existsSync(abs) && statSync(abs).isDirectory()
          ? readdirSync(abs, { recursive: true, withFileTypes: true }).filter((e) => e.isFile()).map((e) => path.relative(ROOT, path.join(e.parentPath, e.name)))
          : [src]
        const left = files.filter((f) => ignored(f))
        t.strictSame(left, [], `${file}:${ins.line} ${src}: all ${files.length} files are in the build context`)
      }
    }
  }
  for (const p of ['node_modules', 'node_modules/sharp/package.json', 'dist/server.js', '.git/HEAD', 'runs/tiny/x.pt', 'export/train.py', 'test/config.test.ts', '.venv/bin/python', 'models/other/model.onnx']) {
    t.ok(ignored(p), `${p} stays out of the build context`)
  }
})

t.test('docker/prune-binaries.mjs parses', async (t) => {
  const r = spawnSync(process.execPath, ['--check', path.join(DOCKER, 'prune-binaries.mjs')], { encoding: 'utf8' })
  t.equal(r.status, 0, r.stderr)
})

t.test('docker/test.sh, docker/test-cuda.sh and docker/check-cuda-libs.sh parse', async (t) => {
  for (const [shell, file] of [['bash', 'test.sh'], ['bash', 'test-cuda.sh'], ['sh', 'check-cuda-libs.sh']]) {
    const r = spawnSync(shell, ['-n', path.join(DOCKER, file)], { encoding: 'utf8' })
    t.equal(r.status, 0, `${file} ${r.stderr}`)
  }
  t.match(JSON.parse(read('package.json')).scripts['test:docker'], /docker\/test-cuda\.sh/, 'npm run test:docker runs the CUDA image test')
})

t.test('docker/check-cuda-libs.sh: passes when only libcuda.so.1 is missing, fails naming any other', { skip: (process.platform !== 'linux' || spawnSync('cc', ['--version']).status !== 0) && 'needs Linux and a C compiler' }, async (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), 'vlt-ldd-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const cc = (args: string[]): void => {
    const r = spawnSync('cc', args, { cwd: dir, encoding: 'utf8' })
    if (r.status !== 0) throw new Error(r.stderr)
  }
  // g calls a driver-API-like function (cu[A-Z]…): left undefined with libcuda.so.1 absent, as allowed
  writeFileSync(path.join(dir, 'f.c'), 'int cuVltProbe(void) { return 0; }\n')
  writeFileSync(path.join(dir, 'g.c'), 'int cuVltProbe(void);\nint g(void) { return cuVltProbe(); }\n')
  // stand-ins that exist only while linking: the driver's libcuda.so.1 and some other library
  cc(['-shared', '-fPIC', '-o', 'libcuda.so.1', '-Wl,-soname,libcuda.so.1', 'f.c'])
  cc(['-shared', '-fPIC', '-o', 'libvltother.so.7', '-Wl,-soname,libvltother.so.7', 'f.c'])
  const make = (sub: string, needs: string): string => {
    const d = path.join(dir, sub)
    mkdirSync(d)
    cc(['-shared', '-fPIC', '-o', path.join(d, 'libonnxruntime_providers_shared.so'), 'f.c'])
    cc(['-shared', '-fPIC', '-o', path.join(d, 'libonnxruntime_providers_cuda.so'), 'g.c', path.join(dir, needs)])
    return d
  }
  const driverOnly = make('driver-only', 'libcuda.so.1')
  const other = make('other', 'libvltother.so.7')
  rmSync(path.join(dir, 'libcuda.so.1'))
  rmSync(path.join(dir, 'libvltother.so.7'))
  const check = (d: string, ...sonames: string[]): ReturnType<typeof spawnSync> => spawnSync('sh', [path.join(DOCKER, 'check-cuda-libs.sh'), d, ...sonames], { encoding: 'utf8' })

  const ok = check(driverOnly)
  t.equal(ok.status, 0, String(ok.stderr))
  t.match(String(ok.stdout), /libonnxruntime_providers_cuda\.so: .*libcuda\.so\.1 left to the driver/)
  t.match(String(ok.stdout), /check-cuda-libs: OK/)

  const bad = check(other)
  t.equal(bad.status, 1)
  t.match(String(bad.stderr), /libonnxruntime_providers_cuda\.so needs libvltother\.so\.7: not found/)

  const noCudnn = check(driverOnly, 'libvlt-no-such-lib.so.9')
  t.equal(noCudnn.status, 1)
  t.match(String(noCudnn.stderr), /libvlt-no-such-lib\.so\.9 \(opened by the CUDA provider at run time\): not in the linker cache/)

  // a library that is there but lacks a symbol the provider calls (a CUDA library too old for it)
  const libs = path.join(dir, 'lib')
  mkdirSync(libs)
  writeFileSync(path.join(dir, 'h.c'), 'int vltProbe(void) { return 0; }\n')
  writeFileSync(path.join(dir, 'k.c'), 'int vltProbe(void);\nint k(void) { return vltProbe(); }\n')
  cc(['-shared', '-fPIC', '-o', path.join(libs, 'libvltold.so.3'), '-Wl,-soname,libvltold.so.3', 'h.c'])
  const old = path.join(dir, 'old')
  mkdirSync(old)
  cc(['-shared', '-fPIC', '-o', path.join(old, 'libonnxruntime_providers_shared.so'), 'f.c'])
  cc(['-shared', '-fPIC', '-o', path.join(old, 'libonnxruntime_providers_cuda.so'), 'k.c', path.join(libs, 'libvltold.so.3')])
  cc(['-shared', '-fPIC', '-o', path.join(libs, 'libvltold.so.3'), '-Wl,-soname,libvltold.so.3', 'f.c'])
  const tooOld = spawnSync('sh', [path.join(DOCKER, 'check-cuda-libs.sh'), old], { encoding: 'utf8', env: { ...process.env, LD_LIBRARY_PATH: libs } })
  t.equal(tooOld.status, 1)
  t.match(String(tooOld.stderr), /libonnxruntime_providers_cuda\.so: undefined symbol vltProbe/)

  const absent = check(path.join(dir, 'nowhere'))
  t.equal(absent.status, 1)
  t.match(String(absent.stderr), /libonnxruntime_providers_cuda\.so: not in /)
})

// ---------------------------------------------------------------------------------------------
// compose

t.test('docker/compose.yaml', async (t) => {
  const compose = parseYaml(read('docker', 'compose.yaml'), { merge: true })
  const svc = compose.services.segmentation
  t.ok(svc, 'service "segmentation"')
  t.equal(svc.build.context, '..', 'build context: the repository root')
  t.equal(svc.build.dockerfile, 'docker/Dockerfile')
  t.ok(existsSync(path.join(DOCKER, svc.build.context, svc.build.dockerfile)))
  t.equal(svc.profiles, undefined, 'the CPU service starts with a plain `docker compose up`')

  const env = Object.fromEntries(Object.entries(svc.environment as Record<string, unknown>).map(([k, v]) => [k, interpolate(v)]))
  for (const k of Object.keys(env)) t.ok(SERVICE_VARS.has(k), `${k} is a service variable`)
  const config = loadConfig(env, 2)
  t.equal(config.modelPath, `/app/${DEFAULT_MODEL_DIR}`, 'the CPU image\'s model')
  t.ok(svc.ports.some((p: string) => interpolate(p).endsWith(`:${config.port}`)), `publishes container port ${config.port}`)
  t.equal(config.port, DEFAULT_PORT)

  t.match(svc.healthcheck.test.join(' '), /\/readyz/, 'healthcheck asks /readyz')
  t.notMatch(svc.healthcheck.test.join(' '), /\b(curl|wget)\b/)
  t.ok(svc.restart, `restart: ${String(svc.restart)}`)
  t.equal(svc.read_only, true, 'read-only root filesystem')
  t.ok(svc.tmpfs.some((m: string) => m.split(':')[0] === '/tmp'), 'tmpfs on /tmp')
  t.strictSame(svc.cap_drop, ['ALL'])
  t.ok(seconds(svc.stop_grace_period) > config.shutdownGraceMs / 1000, `stop_grace_period ${String(svc.stop_grace_period)} > SHUTDOWN_GRACE_MS`)

  const limits = svc.deploy.resources.limits
  const cpus = cpuCores(interpolate(limits.cpus))
  // At most 2 threads per core, and only with intra-op spinning off (the setting BENCHMARKS.md measured).
  t.ok(config.workers * config.threadsPerWorker <= 2 * cpus, `WORKERS × THREADS_PER_WORKER (${config.workers} × ${config.threadsPerWorker}) ≤ 2 × cpus ${cpus}`)
  t.equal(config.intraOpSpinning, false, 'intra-op spinning off')
  t.ok(bytes(interpolate(limits.memory)) >= 512 * 1024 * 1024, 'memory limit')

  const gpu = compose.services['segmentation-gpu']
  t.ok(gpu, 'service "segmentation-gpu"')
  t.strictSame(gpu.profiles, ['gpu'], 'in the gpu profile only')
  t.equal(gpu.build.context, '..')
  t.equal(gpu.build.dockerfile, 'docker/Dockerfile.cuda')
  const device = gpu.deploy.resources.reservations.devices[0]
  t.equal(device.driver, 'nvidia')
  t.ok(device.capabilities.includes('gpu'))
  const gpuEnv = Object.fromEntries(Object.entries(gpu.environment as Record<string, unknown>).map(([k, v]) => [k, interpolate(v)]))
  for (const k of Object.keys(gpuEnv)) t.ok(SERVICE_VARS.has(k), `${k} is a service variable`)
  const gpuConfig = loadConfig(gpuEnv, 2)
  t.strictSame(gpuConfig.executionProviders, ['cuda', 'cpu'])
  t.equal(gpuConfig.modelPath, `/app/${FLOAT_MODEL_DIR}`, 'the GPU image\'s model')
  t.equal(gpuConfig.workers, device.count, 'one engine worker per GPU')
  t.equal(gpu.read_only, true)
  t.notSame(interpolate(gpu.ports[0]).split(':')[0], interpolate(svc.ports[0]).split(':')[0], 'the two services publish different host ports')

  const docker = spawnSync('docker', ['compose', 'version'], { encoding: 'utf8' })
  if (docker.status !== 0) {
    t.test('docker compose config -q', { skip: 'no docker compose on this machine' }, async () => {})
  } else {
    for (const profile of [[], ['--profile', 'gpu']]) {
      const r = spawnSync('docker', ['compose', '-f', path.join(DOCKER, 'compose.yaml'), ...profile, 'config', '-q'], { encoding: 'utf8', timeout: 20_000 })
      t.equal(r.status, 0, `docker compose ${profile.join(' ')} config -q ${r.stderr}`)
    }
  }
})

t.test('docker/compose.models.yaml: mounts a model repository read-only at MODELS_DIR', async (t) => {
  const base = parseYaml(read('docker', 'compose.yaml'), { merge: true }).services.segmentation
  const svc = parseYaml(read('docker', 'compose.models.yaml')).services.segmentation
  const env = Object.fromEntries(Object.entries({ ...base.environment, ...svc.environment } as Record<string, unknown>).map(([k, v]) => [k, interpolate(v)]))
  for (const k of Object.keys(svc.environment)) t.ok(SERVICE_VARS.has(k), `${k} is a service variable`)
  const config = loadConfig(env, 2)
  const mount = svc.volumes[0]
  t.equal(mount.target, config.modelsDir, 'mounted where MODELS_DIR points')
  t.equal(mount.read_only, true)
  t.equal(path.resolve(DOCKER, interpolate(mount.source)), path.join(ROOT, 'models'), 'the default source is the repository\'s models/ folder')
  t.equal(config.defaultModel, path.basename(DEFAULT_MODEL_DIR), 'its default model is the service\'s')
  t.ok(existsSync(path.join(ROOT, 'models', config.defaultModel, 'model.json')), `models/${config.defaultModel} is a flat model folder`)
  const docker = spawnSync('docker', ['compose', 'version'], { encoding: 'utf8' })
  if (docker.status === 0) {
    const r = spawnSync('docker', ['compose', '-f', path.join(DOCKER, 'compose.yaml'), '-f', path.join(DOCKER, 'compose.models.yaml'), 'config', '-q'], { encoding: 'utf8', timeout: 20_000 })
    t.equal(r.status, 0, `docker compose -f compose.yaml -f compose.models.yaml config -q ${r.stderr}`)
  }
})

// ---------------------------------------------------------------------------------------------
// Kubernetes

const K8S = path.join(DOCKER, 'k8s')
type Obj = Record<string, any>
const kustomization = parseYaml(readFileSync(path.join(K8S, 'kustomization.yaml'), 'utf8')) as Obj
const docs: Array<{ file: string, obj: Obj }> = []
for (const file of readdirSync(K8S).filter((f) => /\.ya?ml$/.test(f) && f !== 'kustomization.yaml').sort()) {
  for (const d of parseAllDocuments(readFileSync(path.join(K8S, file), 'utf8'))) {
    if (d.errors.length > 0) throw d.errors[0]
    if (d.contents !== null) docs.push({ file, obj: d.toJSON() })
  }
}
const byKind = (kind: string): Obj => {
  const found = docs.filter((d) => d.obj.kind === kind)
  if (found.length !== 1) throw new Error(`expected one ${kind} in docker/k8s, found ${found.length}`)
  return found[0].obj
}

/** Keys the schemas know, for the objects written by hand here (kubernetes-models ignores unknown keys). */
const KNOWN: Record<string, string[]> = {
  podSpec: ['activeDeadlineSeconds', 'affinity', 'automountServiceAccountToken', 'containers', 'dnsConfig', 'dnsPolicy', 'enableServiceLinks', 'ephemeralContainers', 'hostAliases', 'hostIPC', 'hostNetwork', 'hostPID', 'hostUsers', 'hostname', 'imagePullSecrets', 'initContainers', 'nodeName', 'nodeSelector', 'os', 'overhead', 'preemptionPolicy', 'priority', 'priorityClassName', 'readinessGates', 'resourceClaims', 'resources', 'restartPolicy', 'runtimeClassName', 'schedulerName', 'schedulingGates', 'securityContext', 'serviceAccountName', 'setHostnameAsFQDN', 'shareProcessNamespace', 'subdomain', 'terminationGracePeriodSeconds', 'tolerations', 'topologySpreadConstraints', 'volumes'],
  container: ['args', 'command', 'env', 'envFrom', 'image', 'imagePullPolicy', 'lifecycle', 'livenessProbe', 'name', 'ports', 'readinessProbe', 'resizePolicy', 'resources', 'restartPolicy', 'securityContext', 'startupProbe', 'stdin', 'stdinOnce', 'terminationMessagePath', 'terminationMessagePolicy', 'tty', 'volumeDevices', 'volumeMounts', 'workingDir'],
  probe: ['exec', 'failureThreshold', 'grpc', 'httpGet', 'initialDelaySeconds', 'periodSeconds', 'successThreshold', 'tcpSocket', 'terminationGracePeriodSeconds', 'timeoutSeconds'],
  securityContext: ['allowPrivilegeEscalation', 'appArmorProfile', 'capabilities', 'privileged', 'procMount', 'readOnlyRootFilesystem', 'runAsGroup', 'runAsNonRoot', 'runAsUser', 'seLinuxOptions', 'seccompProfile', 'windowsOptions'],
  podSecurityContext: ['appArmorProfile', 'fsGroup', 'fsGroupChangePolicy', 'runAsGroup', 'runAsNonRoot', 'runAsUser', 'seLinuxOptions', 'seccompProfile', 'supplementalGroups', 'supplementalGroupsPolicy', 'sysctls', 'windowsOptions'],
}
function knownKeys (t: { ok: (...args: any[]) => any }, what: string, obj: Obj | undefined, kind: keyof typeof KNOWN): void {
  for (const k of Object.keys(obj ?? {})) t.ok(KNOWN[kind].includes(k), `${what}.${k} is a ${kind} field`)
}

t.test('docker/k8s: every manifest validates against the Kubernetes schema', async (t) => {
  const models: Record<string, (o: Obj) => { validate: () => void }> = {
    'apps/v1/Deployment': (o) => new Deployment(o as any),
    'v1/Service': (o) => new Service(o as any),
    'autoscaling/v2/HorizontalPodAutoscaler': (o) => new HorizontalPodAutoscaler(o as any),
    'policy/v1/PodDisruptionBudget': (o) => new PodDisruptionBudget(o as any),
  }
  t.strictSame(docs.map((d) => `${d.obj.apiVersion as string}/${d.obj.kind as string}`).sort(), Object.keys(models).sort(), 'Deployment, Service, HPA (autoscaling/v2), PDB')
  for (const { file, obj } of docs) {
    const make = models[`${obj.apiVersion as string}/${obj.kind as string}`]
    t.doesNotThrow(() => make(obj).validate(), `${file}: ${obj.kind as string} is valid`)
  }
  // the validation itself works (control)
  t.throws(() => new Deployment({ metadata: { name: 'x' }, spec: { selector: {}, template: { spec: { containers: [{ name: 'c', ports: [{ containerPort: '8080' as any }] }] } } } }).validate())

  const files = readdirSync(K8S).filter((f) => /\.ya?ml$/.test(f) && f !== 'kustomization.yaml').sort()
  t.strictSame([...kustomization.resources].sort(), files, 'kustomization.yaml lists every manifest')
})

t.test('docker/k8s: the Deployment follows the service', async (t) => {
  const dep = byKind('Deployment')
  const pod = dep.spec.template.spec
  knownKeys(t, 'pod spec', pod, 'podSpec')
  t.equal(pod.containers.length, 1)
  const c = pod.containers[0]
  knownKeys(t, 'container', c, 'container')
  knownKeys(t, 'container securityContext', c.securityContext, 'securityContext')
  knownKeys(t, 'pod securityContext', pod.securityContext, 'podSecurityContext')

  const env: Record<string, string> = {}
  for (const e of c.env) {
    t.ok(SERVICE_VARS.has(e.name), `${String(e.name)} is a service variable`)
    // A value from the downward API (MEMORY_BUDGET_MB from the memory limit) is checked in "memory budget".
    if (e.valueFrom !== undefined) continue
    t.type(e.value, 'string', `${String(e.name)} is a string`)
    env[e.name] = e.value
  }
  const config = loadConfig(env, 2)

  // port
  const ports = c.ports as Obj[]
  const http = ports.find((p) => p.name === 'http')
  t.ok(http, 'a port named http')
  t.equal(http?.containerPort, config.port, `containerPort = PORT (${config.port})`)
  t.equal(config.port, DEFAULT_PORT)

  // probes
  const probePort = (p: Obj): number => typeof p.httpGet.port === 'number' ? p.httpGet.port : ports.find((x) => x.name === p.httpGet.port)?.containerPort
  for (const [probe, want] of [['startupProbe', '/readyz'], ['readinessProbe', '/readyz'], ['livenessProbe', '/healthz']] as const) {
    const p = c[probe]
    t.ok(p, probe)
    knownKeys(t, probe, p, 'probe')
    t.equal(p.httpGet.path, want, `${probe} on ${want}`)
    t.equal(ROUTES.get(want), 'GET', `the service answers GET ${want}`)
    t.equal(probePort(p), config.port, `${probe} on port ${config.port}`)
  }
  const startupBudget = c.startupProbe.periodSeconds * c.startupProbe.failureThreshold
  t.ok(startupBudget >= 60, `startupProbe gives the model ${startupBudget} s to load`)
  t.ok(c.livenessProbe.periodSeconds * c.livenessProbe.failureThreshold >= 20, 'liveness is not trigger-happy')

  // parallelism vs CPU
  const { requests, limits } = c.resources
  t.ok(limits.cpu !== undefined && limits.memory !== undefined && requests.cpu !== undefined && requests.memory !== undefined, 'requests and limits')
  // At most 2 threads per core, and only with intra-op spinning off (the setting BENCHMARKS.md measured).
  t.ok(config.workers * config.threadsPerWorker <= 2 * cpuCores(limits.cpu), `WORKERS × THREADS_PER_WORKER (${config.workers} × ${config.threadsPerWorker}) ≤ 2 × CPU limit ${String(limits.cpu)}`)
  t.ok(config.workers * config.threadsPerWorker <= 2 * cpuCores(requests.cpu), 'and ≤ 2 × the CPU request (the HPA measures against it)')
  t.equal(config.intraOpSpinning, false, 'intra-op spinning off')
  t.ok(cpuCores(requests.cpu) <= cpuCores(limits.cpu))
  t.ok(bytes(requests.memory) <= bytes(limits.memory))
  t.ok(env.WORKERS !== undefined && env.THREADS_PER_WORKER !== undefined, 'WORKERS and THREADS_PER_WORKER are explicit (the CPU count seen in a container is the node\'s)')

  // shutdown
  const preStop = c.lifecycle.preStop.exec.command as string[]
  t.equal(preStop[0], 'sleep', 'preStop sleeps (coreutils are in bookworm-slim) so endpoints drain first')
  const sleep = Number(preStop[1])
  t.ok(sleep >= 2 && sleep <= 15, `preStop sleep ${sleep} s`)
  t.equal(config.shutdownGraceMs, DEFAULT_GRACE_MS)
  t.ok(pod.terminationGracePeriodSeconds >= sleep + config.shutdownGraceMs / 1000 + 5,
    `terminationGracePeriodSeconds ${String(pod.terminationGracePeriodSeconds)} ≥ preStop ${sleep} s + SHUTDOWN_GRACE_MS ${config.shutdownGraceMs / 1000} s + 5 s`)

  // security
  t.equal(pod.securityContext.runAsNonRoot, true)
  t.ok(pod.securityContext.runAsUser > 0)
  t.equal(c.securityContext.readOnlyRootFilesystem, true)
  t.equal(c.securityContext.allowPrivilegeEscalation, false)
  t.strictSame(c.securityContext.capabilities.drop, ['ALL'])
  const tmp = (c.volumeMounts as Obj[]).find((m) => m.mountPath === '/tmp')
  t.ok(tmp, '/tmp is writable')
  t.ok((pod.volumes as Obj[]).some((v) => v.name === tmp?.name && v.emptyDir !== undefined), '/tmp is an emptyDir')
  t.equal(config.modelPath, `/app/${DEFAULT_MODEL_DIR}`, 'the model comes with the image')
  t.notOk((c.volumeMounts as Obj[]).some((m) => String(m.mountPath).startsWith('/app')), 'no volume over the image\'s model folder')

  // labels
  const podLabels = dep.spec.template.metadata.labels as Obj
  for (const [k, v] of Object.entries(dep.spec.selector.matchLabels as Obj)) t.equal(podLabels[k], v, `selector ${k}`)
  t.equal(dep.spec.strategy.rollingUpdate.maxUnavailable, 0, 'rolling updates keep capacity')

  // image ↔ kustomization
  const image = String(c.image).split(':')[0]
  t.ok((kustomization.images as Obj[]).some((i) => i.name === image), `kustomization sets the tag of ${image}`)
})

t.test('docker/k8s: Service, HPA and PDB point at the Deployment', async (t) => {
  const dep = byKind('Deployment')
  const podLabels = dep.spec.template.metadata.labels as Obj
  const c = dep.spec.template.spec.containers[0]

  const svc = byKind('Service')
  for (const [k, v] of Object.entries(svc.spec.selector as Obj)) t.equal(podLabels[k], v, `Service selector ${k}`)
  for (const p of svc.spec.ports as Obj[]) {
    const target = typeof p.targetPort === 'number' ? p.targetPort : (c.ports as Obj[]).find((x) => x.name === p.targetPort)?.containerPort
    t.equal(target, DEFAULT_PORT, `Service port ${String(p.port)} → container ${DEFAULT_PORT}`)
  }

  const hpa = byKind('HorizontalPodAutoscaler')
  t.strictSame(hpa.spec.scaleTargetRef, { apiVersion: dep.apiVersion, kind: 'Deployment', name: dep.metadata.name })
  t.ok((hpa.spec.metrics as Obj[]).some((m) => m.type === 'Resource' && m.resource.name === 'cpu' && m.resource.target.type === 'Utilization'), 'scales on CPU utilisation')
  t.ok(hpa.spec.minReplicas >= 2 && hpa.spec.minReplicas <= hpa.spec.maxReplicas)
  t.ok(dep.spec.replicas >= hpa.spec.minReplicas, 'Deployment replicas ≥ HPA minimum')

  const pdb = byKind('PodDisruptionBudget')
  for (const [k, v] of Object.entries(pdb.spec.selector.matchLabels as Obj)) t.equal(podLabels[k], v, `PDB selector ${k}`)
  t.ok(pdb.spec.minAvailable < hpa.spec.minReplicas, 'the PDB lets a node drain proceed')
})

// ---------------------------------------------------------------------------------------------
// Kubernetes, GPU overlay (docker/k8s/gpu): applied here as kustomize would, then validated

/**
 * A strategic-merge patch as kustomize applies these: maps merge key by key, null removes a key,
 * lists of objects with a `name` merge by name (containers, env), other lists are replaced.
 */
function strategicMerge (base: unknown, patch: unknown): unknown {
  if (Array.isArray(patch)) {
    if (!Array.isArray(base) || !patch.every((p) => typeof p === 'object' && p !== null && 'name' in p)) return patch
    const out = base.map((b) => ({ ...b }))
    for (const p of patch as Obj[]) {
      const i = out.findIndex((b) => b.name === p.name)
      if (i >= 0) out[i] = strategicMerge(out[i], p) as Obj
      else out.push(p)
    }
    return out
  }
  if (typeof patch !== 'object' || patch === null || typeof base !== 'object' || base === null || Array.isArray(base)) return patch
  const out: Obj = { ...(base as Obj) }
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k]
    else out[k] = k in out ? strategicMerge(out[k], v) : v
  }
  return out
}

const GPU = path.join(K8S, 'gpu')
const gpuKustomization = parseYaml(readFileSync(path.join(GPU, 'kustomization.yaml'), 'utf8')) as Obj
const gpuFile = (f: string): Obj => parseYaml(readFileSync(path.join(GPU, f), 'utf8')) as Obj

t.test('strategicMerge (control)', async (t) => {
  t.strictSame(strategicMerge({ a: 1, b: { c: 2, d: 3 }, l: [{ name: 'x', v: 1 }, { name: 'y', v: 2 }], s: [1, 2] }, { b: { c: null, e: 4 }, l: [{ name: 'y', v: 5 }, { name: 'z' }], s: [3] }),
    { a: 1, b: { d: 3, e: 4 }, l: [{ name: 'x', v: 1 }, { name: 'y', v: 5 }, { name: 'z' }], s: [3] })
})

t.test('docker/k8s/gpu: the overlay', async (t) => {
  t.ok(gpuKustomization.resources.includes('../'), 'built on docker/k8s')
  for (const r of gpuKustomization.resources.filter((r: string) => r !== '../')) t.ok(existsSync(path.join(GPU, r)), `${String(r)} exists`)
  const files = readdirSync(GPU).filter((f) => /\.ya?ml$/.test(f) && f !== 'kustomization.yaml').sort()
  const listed = [...gpuKustomization.resources.filter((r: string) => r !== '../'), ...gpuKustomization.patches.filter((p: Obj) => p.path !== undefined).map((p: Obj) => p.path)].sort()
  t.strictSame(listed, files, 'kustomization.yaml uses every file in docker/k8s/gpu')
  const hpaDelete = gpuKustomization.patches.find((p: Obj) => p.target?.kind === 'HorizontalPodAutoscaler')
  t.match(String(hpaDelete?.patch), /\$patch: delete/, 'the CPU HPA is removed (KEDA makes its own)')
  t.equal(hpaDelete?.target.name, byKind('HorizontalPodAutoscaler').metadata.name)
})

t.test('docker/k8s/gpu: the GPU Deployment validates and follows the service', async (t) => {
  const base = byKind('Deployment')
  const patch = gpuFile('deployment.yaml')
  t.equal(patch.metadata.name, base.metadata.name, 'patches the base Deployment')
  const dep = strategicMerge(base, patch) as Obj
  t.doesNotThrow(() => new Deployment(dep as any).validate(), 'the merged Deployment is valid')
  const pod = dep.spec.template.spec
  knownKeys(t, 'pod spec', pod, 'podSpec')
  t.equal(pod.containers.length, 1, 'the patch merges into the one container')
  const c = pod.containers[0]
  knownKeys(t, 'container', c, 'container')

  t.equal(String(c.resources.limits['nvidia.com/gpu']), '1', 'one GPU per pod')
  t.equal(pod.runtimeClassName, 'nvidia', 'the NVIDIA runtime class')
  t.ok(Object.keys(pod.nodeSelector ?? {}).some((k) => k.startsWith('nvidia.com/')), 'scheduled on GPU nodes')
  t.ok((pod.tolerations as Obj[]).some((tol) => tol.key === 'nvidia.com/gpu' && tol.effect === 'NoSchedule'), 'tolerates the GPU nodes\' taint')

  const env: Record<string, string> = {}
  for (const e of c.env) {
    t.ok(SERVICE_VARS.has(e.name), `${String(e.name)} is a service variable`)
    // MEMORY_BUDGET_MB comes from the pod's own memory limit (the downward API), not a literal.
    if (e.valueFrom !== undefined) continue
    t.type(e.value, 'string', `${String(e.name)} is a string`)
    env[e.name] = e.value
  }
  t.equal(env.PORT, '8080', 'the base environment is kept (env merges by name)')
  const config = loadConfig(env, 2)
  t.strictSame(config.executionProviders, ['cuda', 'cpu'])
  t.equal(config.modelPath, `/app/${FLOAT_MODEL_DIR}`, 'the model the CUDA image bakes in')
  t.equal(config.requireGpu, true, 'REQUIRE_GPU: no silent CPU fallback on a GPU node')
  t.equal(config.workers, Number(c.resources.limits['nvidia.com/gpu']), 'one engine worker per GPU')
  t.equal(config.cudaDeviceId, 0, 'the pod sees its one GPU as device 0')
  t.ok(config.workers * config.threadsPerWorker <= 2 * cpuCores(c.resources.limits.cpu), 'WORKERS × THREADS_PER_WORKER ≤ 2 × CPU limit')
  t.ok(c.startupProbe.periodSeconds * c.startupProbe.failureThreshold >= 180, 'the startup probe allows CUDA start-up')

  const image = String(c.image).split(':')[0]
  const set = (gpuKustomization.images as Obj[]).find((i) => i.name === image)
  t.match(String(set?.newTag), /cuda/, 'the CUDA image tag')
})

t.test('docker/k8s/gpu: the PodDisruptionBudget lets a drain move the one replica', async (t) => {
  const pdb = strategicMerge(byKind('PodDisruptionBudget'), gpuFile('pdb.yaml')) as Obj
  t.doesNotThrow(() => new PodDisruptionBudget(pdb as any).validate())
  t.equal(pdb.spec.minAvailable, undefined)
  t.equal(pdb.spec.maxUnavailable, 1)
})

t.test('docker/k8s/gpu: the KEDA ScaledObject scales the Deployment on the exported queue depth', async (t) => {
  const so = gpuFile('scaledobject.yaml')
  const dep = byKind('Deployment')
  t.equal(so.apiVersion, 'keda.sh/v1alpha1')
  t.equal(so.kind, 'ScaledObject')
  // KEDA 2.x ScaledObject fields (the CRD is not in kubernetes-models): unknown keys are typos
  const spec = ['scaleTargetRef', 'pollingInterval', 'cooldownPeriod', 'initialCooldownPeriod', 'idleReplicaCount', 'minReplicaCount', 'maxReplicaCount', 'fallback', 'advanced', 'triggers']
  for (const k of Object.keys(so.spec)) t.ok(spec.includes(k), `spec.${k} is a ScaledObject field`)
  t.strictSame(so.spec.scaleTargetRef, { apiVersion: dep.apiVersion, kind: 'Deployment', name: dep.metadata.name })
  t.ok(so.spec.minReplicaCount >= 1 && so.spec.minReplicaCount <= so.spec.maxReplicaCount, 'at least one replica, min ≤ max')
  const behavior = so.spec.advanced.horizontalPodAutoscalerConfig.behavior
  t.doesNotThrow(() => new HorizontalPodAutoscaler({ metadata: { name: 'x' }, spec: { scaleTargetRef: so.spec.scaleTargetRef, maxReplicas: so.spec.maxReplicaCount, behavior } } as any).validate(), 'the HPA behaviour is valid')

  t.equal(so.spec.triggers.length, 1)
  const trigger = so.spec.triggers[0]
  t.equal(trigger.type, 'prometheus')
  for (const k of Object.keys(trigger.metadata)) t.ok(['serverAddress', 'query', 'threshold', 'activationThreshold', 'namespace', 'customHeaders', 'ignoreNullValues', 'unsafeSsl', 'queryParameters'].includes(k), `prometheus trigger metadata.${k}`)
  for (const k of Object.keys(trigger.metadata)) t.type(trigger.metadata[k], 'string', `metadata.${k} is a string (KEDA reads strings)`)
  t.match(trigger.metadata.serverAddress, /^https?:\/\//)
  t.ok(Number(trigger.metadata.threshold) > 0, 'a positive threshold')
  const metric = /\b(vlt_[a-z_]+)\{/.exec(trigger.metadata.query)?.[1]
  t.equal(metric, 'vlt_inference_queue_depth', 'the queue depth')
  t.match(read('src', 'plugins', 'metrics.ts'), new RegExp(`(name: |perModel\\('gauge', )'${metric ?? '-'}'`), 'a metric the service exports')
  const matcher = /app_kubernetes_io_name="([^"]+)"/.exec(trigger.metadata.query)?.[1]
  t.equal(matcher, dep.spec.template.metadata.labels['app.kubernetes.io/name'], 'selects the Deployment\'s pods')
})

// ---------------------------------------------------------------------------------------------
// Memory budget: compose and Kubernetes give the service a budget that agrees with the memory limit

t.test('memory budget: MEMORY_BUDGET_MB agrees with the memory limit (compose, Kubernetes)', async (t) => {
  const MiB = 1024 * 1024
  const compose = parseYaml(read('docker', 'compose.yaml'), { merge: true })
  const svc = compose.services.segmentation
  // Compose reads memory sizes in binary units whatever the case (1536M = 1536 MiB).
  const m = /^(\d+)[mM]$/.exec(interpolate(svc.deploy.resources.limits.memory))
  t.ok(m !== null, 'the compose limit is in MiB')
  const limit = Number(m?.[1]) * MiB
  const budget = loadConfig({ MEMORY_BUDGET_MB: interpolate(svc.environment.MEMORY_BUDGET_MB) }, 2).memoryBudgetMb
  t.equal(budget * MiB, limit, `compose: MEMORY_BUDGET_MB ${budget} = the limit ${interpolate(svc.deploy.resources.limits.memory)}`)
  t.match(String(svc.environment.MEMORY_BUDGET_MB), /\$\{MEMORY_MB\b/, 'both from one variable')
  t.match(String(svc.deploy.resources.limits.memory), /\$\{MEMORY_MB\b/)

  const c = byKind('Deployment').spec.template.spec.containers[0]
  const e = (c.env as Obj[]).find((x) => x.name === 'MEMORY_BUDGET_MB')
  t.ok(e !== undefined, 'Deployment sets MEMORY_BUDGET_MB')
  t.strictSame(e?.valueFrom?.resourceFieldRef, { containerName: c.name, resource: 'limits.memory', divisor: '1Mi' }, 'from its own memory limit, in MiB')
  t.ok(bytes(c.resources.limits.memory) >= 1024 * MiB, `the limit ${String(c.resources.limits.memory)} leaves room for requests beside the reserve`)
})
