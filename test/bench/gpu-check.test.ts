/**
 * bench/gpu-check.sh and bench/gpu-check.mjs on a machine without a GPU: the shell script stops
 * with exit code 3 and says so; the measuring script runs its steps with the CPU in CUDA's place
 * (--provider cpu), which checks the script, not the GPU. On a machine with a GPU the first part
 * is skipped: there the script is meant to be run by hand (BENCHMARKS.md).
 */
import t from 'tap'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { spawnSync } from 'node:child_process'

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..')

t.test('the scripts parse', async (t) => {
  t.equal(spawnSync('bash', ['-n', path.join(ROOT, 'bench', 'gpu-check.sh')]).status, 0, 'gpu-check.sh')
  t.equal(spawnSync(process.execPath, ['--check', path.join(ROOT, 'bench', 'gpu-check.mjs')]).status, 0, 'gpu-check.mjs')
})

const hasGpu = spawnSync('nvidia-smi', ['-L'], { encoding: 'utf8' }).status === 0
t.test('no GPU: exit code 3 and a clear message, nothing measured', { skip: hasGpu && 'this machine has an NVIDIA GPU' }, async (t) => {
  const r = spawnSync('bash', [path.join(ROOT, 'bench', 'gpu-check.sh')], { cwd: ROOT, encoding: 'utf8', timeout: 60_000 })
  t.equal(r.status, 3, r.stderr)
  t.match(r.stderr, /^gpu-check: no NVIDIA GPU visible: .*Nothing measured\.$/m)
  t.equal(r.stdout, '', 'no table')
})

t.test('gpu-check.mjs --provider cpu: golden case and the table, for the shipped model', async (t) => {
  const r = spawnSync(process.execPath, [path.join(ROOT, 'bench', 'gpu-check.mjs'), '--provider', 'cpu', '--seconds', '0', '--batches', '2'], { cwd: ROOT, encoding: 'utf8', timeout: 110_000 })
  t.equal(r.status, 0, r.stderr)
  const lines = r.stdout.trim().split('\n')
  t.match(lines[0], /^\| model \| provider \| graph \| batch \| p50 ms \|/)
  const rows = lines.filter((l) => /^\| vlt-refshapes@/.test(l))
  t.strictSame(rows.map((l) => l.split('|')[4].trim()), ['1', '2'], 'batch 1 and the --batches rows')
  const json = JSON.parse(lines.at(-1) ?? '{}')
  t.equal(json.provider, 'cpu')
  for (const row of json.rows) {
    t.equal(row.diff, 0, 'the CPU against itself: identical outputs')
    t.ok(row.p50 > 0 && row.ips > 0)
  }
  t.match(r.stderr, /golden case cpu vs CPU max \|Δ\| 0\.00e\+0 <= 0\.001 .*"split mask_logits":0/, 'model.onnx and the split graphs compared')
})
