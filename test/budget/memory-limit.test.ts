/**
 * The memory the service may use: cgroup v2, cgroup v1, MEMORY_BUDGET_MB, physical memory, from
 * files given to it (no container needed).
 */
import t from 'tap'
import { cgroupMemoryLimit, memoryLimit } from '../../src/budget/memory-limit.js'

const MiB = 1024 * 1024
const files = (map: Record<string, string>) => ({ readFile: (p: string) => map[p], totalMem: () => 8192 * MiB })

t.test('cgroup v2: memory.max of the namespace root (a container)', async (t) => {
  const probe = files({ '/proc/self/cgroup': '0::/\n', '/sys/fs/cgroup/memory.max': '1610612736\n' })
  t.strictSame(memoryLimit(0, probe), { bytes: 1536 * MiB, source: 'cgroup v2' })
})

t.test('cgroup v2: our own cgroup\'s file first', async (t) => {
  const probe = files({
    '/proc/self/cgroup': '0::/system.slice/vlt.service\n',
    '/sys/fs/cgroup/system.slice/vlt.service/memory.max': '536870912',
    '/sys/fs/cgroup/memory.max': 'max',
  })
  t.strictSame(cgroupMemoryLimit(probe), { bytes: 512 * MiB, source: 'cgroup v2' })
})

t.test('cgroup v2 "max" means no limit: physical memory, or MEMORY_BUDGET_MB', async (t) => {
  const probe = files({ '/proc/self/cgroup': '0::/\n', '/sys/fs/cgroup/memory.max': 'max\n' })
  t.strictSame(memoryLimit(0, probe), { bytes: 8192 * MiB, source: 'physical memory' })
  t.strictSame(memoryLimit(1024, probe), { bytes: 1024 * MiB, source: 'MEMORY_BUDGET_MB' })
})

t.test('cgroup v1 (hybrid hierarchy): memory.limit_in_bytes; its "unlimited" value is no limit', async (t) => {
  const cg = '12:cpu,cpuacct:/\n4:memory:/docker/abc\n0::/\n'
  t.strictSame(memoryLimit(0, files({ '/proc/self/cgroup': cg, '/sys/fs/cgroup/memory/docker/abc/memory.limit_in_bytes': '2147483648' })), { bytes: 2048 * MiB, source: 'cgroup v1' })
  t.strictSame(memoryLimit(0, files({ '/proc/self/cgroup': cg, '/sys/fs/cgroup/memory/memory.limit_in_bytes': '9223372036854771712' })), { bytes: 8192 * MiB, source: 'physical memory' })
})

t.test('MEMORY_BUDGET_MB and a cgroup limit: the smaller counts', async (t) => {
  const probe = files({ '/proc/self/cgroup': '0::/\n', '/sys/fs/cgroup/memory.max': String(1536 * MiB) })
  t.strictSame(memoryLimit(1024, probe), { bytes: 1024 * MiB, source: 'MEMORY_BUDGET_MB' })
  t.strictSame(memoryLimit(4096, probe), { bytes: 1536 * MiB, source: 'cgroup v2' })
})

t.test('no cgroup files at all: MEMORY_BUDGET_MB, else physical memory', async (t) => {
  t.strictSame(memoryLimit(0, files({})), { bytes: 8192 * MiB, source: 'physical memory' })
  t.strictSame(memoryLimit(300, files({})), { bytes: 300 * MiB, source: 'MEMORY_BUDGET_MB' })
  t.equal(cgroupMemoryLimit(files({ '/sys/fs/cgroup/memory.max': 'garbage' })), undefined, 'unreadable value: no limit')
})
