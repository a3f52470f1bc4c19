/**
 * How much memory the service may use: the cgroup limit of the container it runs in (cgroup v2
 * `memory.max`, else cgroup v1 `memory.limit_in_bytes`), MEMORY_BUDGET_MB when it is set (the
 * smaller of the two when both are), else the physical memory.
 *
 * The file reads are injectable so the derivation is tested without a container.
 */
import { readFileSync } from 'node:fs'
import os from 'node:os'

export type LimitSource = 'cgroup v2' | 'cgroup v1' | 'MEMORY_BUDGET_MB' | 'physical memory'

export interface MemoryLimit {
  bytes: number
  source: LimitSource
}

export interface LimitProbe {
  /** Reads a file as text; undefined when it does not exist or cannot be read. */
  readFile?: (path: string) => string | undefined
  totalMem?: () => number
}

const MiB = 1024 * 1024

function readText (path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8')
  } catch {
    return undefined
  }
}

/**
 * The cgroup this process belongs to, from /proc/self/cgroup: v2 has one line `0::/path`, v1 has
 * `N:memory:/path` (or `N:...,memory,...:/path`). Inside a container with its own cgroup
 * namespace the path is `/`.
 */
function cgroupPaths (readFile: (path: string) => string | undefined): { v2?: string, v1?: string } {
  const text = readFile('/proc/self/cgroup') ?? ''
  const out: { v2?: string, v1?: string } = {}
  for (const line of text.split('\n')) {
    const m = /^\d+:([^:]*):(.*)$/.exec(line.trim())
    if (m === null) continue
    if (m[1] === '') out.v2 = m[2]
    else if (m[1].split(',').includes('memory')) out.v1 = m[2]
  }
  return out
}

/** A positive byte count, or undefined for 'max', nonsense, or v1's "no limit" (a value near 2^63). */
function parseLimit (text: string | undefined): number | undefined {
  if (text === undefined) return undefined
  const s = text.trim()
  if (!/^\d+$/.test(s)) return undefined
  const n = Number(s)
  if (!(n > 0) || n >= 2 ** 60) return undefined
  return n
}

/** The cgroup's memory limit in bytes, if there is one. */
export function cgroupMemoryLimit (probe: LimitProbe = {}): MemoryLimit | undefined {
  const readFile = probe.readFile ?? readText
  const paths = cgroupPaths(readFile)
  // Our own cgroup's file first, then the namespace root (what a container sees as its cgroup).
  const candidates = (base: string, path: string | undefined, file: string): string[] =>
    [...new Set([path !== undefined ? `${base}${path === '/' ? '' : path}/${file}` : undefined, `${base}/${file}`].filter((x): x is string => x !== undefined))]
  for (const f of candidates('/sys/fs/cgroup', paths.v2, 'memory.max')) {
    const v = parseLimit(readFile(f))
    if (v !== undefined) return { bytes: v, source: 'cgroup v2' }
  }
  for (const f of candidates('/sys/fs/cgroup/memory', paths.v1, 'memory.limit_in_bytes')) {
    const v = parseLimit(readFile(f))
    if (v !== undefined) return { bytes: v, source: 'cgroup v1' }
  }
  return undefined
}

/** The memory the service may use (see the top of this file). `budgetMb` is MEMORY_BUDGET_MB (0 = unset). */
export function memoryLimit (budgetMb: number, probe: LimitProbe = {}): MemoryLimit {
  const cgroup = cgroupMemoryLimit(probe)
  const configured = budgetMb > 0 ? { bytes: Math.round(budgetMb * MiB), source: 'MEMORY_BUDGET_MB' as const } : undefined
  if (cgroup !== undefined && configured !== undefined) return configured.bytes < cgroup.bytes ? configured : cgroup
  return cgroup ?? configured ?? { bytes: (probe.totalMem ?? os.totalmem)(), source: 'physical memory' }
}
