/**
 * Static checks of docker/: both Dockerfiles lint clean (dockerfile-utils) and follow the service
 * (port, health paths, entry point, environment names and values), .dockerignore sends what they
 * copy, compose.yaml is consistent (and `docker compose config -q` accepts it where Docker is
 * installed), and the Kubernetes manifests validate against the Kubernetes schemas
 * (kubernetes-models) and agree with each other and with the service. No Docker needed.
 * The real container test is docker/test.sh (npm run test:docker).
 */
import t from 'tap'
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs'
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
  { file: 'Dockerfile', providers: 'cpu' },
  { file: 'Dockerfile.cuda', providers: 'cuda,cpu' },
] as const

t.test('dockerfile-utils catches errors (control)', async (t) => {
  t.ok(dockerfileUtils.validate('FROM node:20-bookworm-slim\nEXPOZE 8080\nHEALTHCHECK --interval=1x CMD true\n').length >= 2)
})

for (const { file, providers } of DOCKERFILES) {
  t.test(`docker/${file}`, async (t) => {
    const text = read('docker', file)
    const problems = dockerfileUtils.validate(text).map((d) => `${d.range.start.line + 1}: ${d.message}`)
    t.strictSame(problems, [], 'dockerfile-utils lint is clean')

    const { args, stages } = parseDockerfile(text)
    t.equal(args.get('NODE_IMAGE'), 'node:20-bookworm-slim', 'Node 20 on Debian bookworm (slim)')
    const names = new Set(stages.map((s) => s.name).filter((n) => n !== undefined))
    for (const s of stages) t.ok(s.base === '${NODE_IMAGE}' || s.base === '${CUDA_IMAGE}' || names.has(s.base), `FROM ${s.base}`)
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
    t.equal(env.MODEL_PATH, '/app/models/vlt-refshapes', 'the default model, baked in')
    t.equal(Number(env.PORT ?? DEFAULT_PORT), DEFAULT_PORT)
    const serviceEnv = Object.fromEntries(Object.entries(env).filter(([k]) => SERVICE_VARS.has(k)))
    t.doesNotThrow(() => loadConfig(serviceEnv, 2), 'the image environment is a valid service config')
    const copies = final.instructions.filter((i) => i.keyword === 'COPY').map((i) => i.args).join('\n')
    for (const needed of ['models/vlt-refshapes', 'package.json', 'openapi.yaml', '/app/dist', '/app/node_modules']) {
      t.match(copies, needed, `runtime stage gets ${needed}`)
    }

    if (file === 'Dockerfile.cuda') {
      t.match(args.get('CUDA_IMAGE') ?? '', /^nvidia\/cuda:12\.[\d.]+-cudnn[\d]*-runtime-ubuntu/, 'CUDA 12 + cuDNN runtime base')
      t.equal(final.base, '${CUDA_IMAGE}')
      t.equal(envOf(stages[0]).ONNXRUNTIME_NODE_INSTALL, 'cuda12', 'onnxruntime-node CUDA 12 binaries installed')
      t.match(runs, /onnxruntime-node\/script\/install/, 'onnxruntime-node install script run explicitly')
      t.match(runs, /libonnxruntime_providers_cuda\.so/, 'the CUDA provider library is checked')
    } else {
      t.equal(final.base, '${NODE_IMAGE}')
      t.notMatch(text, /cuda12|ONNXRUNTIME_NODE_INSTALL/, 'no CUDA download on the CPU image')
      t.match(read('.npmrc'), /^onnxruntime-node-install=skip$/m, '.npmrc skips the CUDA download')
    }
  })
}

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

t.test('docker/test.sh parses', async (t) => {
  const r = spawnSync('bash', ['-n', path.join(DOCKER, 'test.sh')], { encoding: 'utf8' })
  t.equal(r.status, 0, r.stderr)
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
  t.ok(existsSync(path.join(DOCKER, interpolate(mount.source), 'vlt-refshapes', 'model.json')), 'the default source is the repository\'s models/ folder')
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
  t.equal(config.modelPath, '/app/models/vlt-refshapes', 'the model comes with the image')
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
