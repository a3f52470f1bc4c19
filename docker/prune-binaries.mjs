// Build-stage helper for docker/Dockerfile and docker/Dockerfile.cuda: keep only the native
// binaries of the platform the image is built for (onnxruntime-node bundles darwin, win32 and
// linux/arm64 next to linux/x64; sharp ships its binaries as one @img/sharp-* package per
// platform) and drop files that have no use at run time.
// Usage: node prune-binaries.mjs [node_modules]
import { readdirSync, rmSync, statSync } from 'node:fs'
import path from 'node:path'

const root = path.resolve(process.argv[2] ?? 'node_modules')
const platform = process.platform
const arch = process.arch
let removed = 0
const rm = (p) => { rmSync(p, { recursive: true, force: true }); removed++ }
const list = (dir) => { try { return readdirSync(dir) } catch { return [] } }

// onnxruntime-node/bin/napi-v*/<platform>/<arch>
const ortBin = path.join(root, 'onnxruntime-node', 'bin')
for (const napi of list(ortBin)) {
  for (const os of list(path.join(ortBin, napi))) {
    const osDir = path.join(ortBin, napi, os)
    if (os !== platform) { rm(osDir); continue }
    for (const a of list(osDir)) if (a !== arch) rm(path.join(osDir, a))
  }
}
const kept = path.join(ortBin, 'napi-v6', platform, arch)
if (list(kept).length === 0) throw new Error(`no onnxruntime-node binaries left for ${platform}/${arch} in ${kept}`)

// @img/sharp-<platform>-<arch>, @img/sharp-libvips-<platform>-<arch> (glibc Linux only here)
for (const name of list(path.join(root, '@img'))) {
  if (!name.startsWith('sharp-')) continue
  const target = name.replace(/^sharp-(libvips-)?/, '')
  if (target !== `${platform}-${arch}`) rm(path.join(root, '@img', name))
}
if (!list(path.join(root, '@img')).includes(`sharp-${platform}-${arch}`)) throw new Error(`@img/sharp-${platform}-${arch} is missing`)

// type declarations, source maps and TypeScript sources are of no use in the image
const junk = /(\.d\.ts|\.d\.mts|\.d\.cts|\.js\.map|\.mjs\.map|\.cjs\.map|\.tsbuildinfo)$/
function walk (dir) {
  for (const name of list(dir)) {
    const p = path.join(dir, name)
    const s = statSync(p, { throwIfNoEntry: false })
    if (s === undefined) continue
    if (s.isDirectory()) walk(p)
    else if (junk.test(name)) rm(p)
  }
}
walk(root)
console.log(`prune-binaries: kept ${platform}/${arch}, removed ${removed} paths`)
