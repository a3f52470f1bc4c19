/**
 * The model folder contract (docs/vlt.md §3): `model.json` read and checked once at start-up.
 * Every preprocessing and post-processing constant the service uses comes from here.
 *
 * Two layouts: `onnx` (model.onnx, the whole network) and `split` (image_encoder.onnx + head.onnx,
 * the same network cut at the backbone), either or both; a folder may ship only `split`, the graphs
 * the service loads. Checks that refuse start-up: neither listed, missing files, a listed graph
 * file whose sha256 differs from model.json, and input/output names other than the ones the engine
 * feeds and reads (src/engine/protocol.ts). The sessions' own `inputNames` / `outputNames` are
 * checked against these in each engine worker.
 */
import { createHash } from 'node:crypto'
import { createReadStream } from 'node:fs'
import { readFile, stat } from 'node:fs/promises'
import path from 'node:path'
import { GRAPH_INPUTS, GRAPH_OUTPUTS, type GoldenCheck, type GraphFiles, type ModelGraphs } from '../engine/protocol.js'
import { isThreshold } from '../image/postprocess.js'
import type { InputSpec, SharpKernel } from '../image/preprocess.js'
import { PAD_ID, parseVocab, UNK_ID } from './tokenizer.js'

export interface OnnxFile {
  file: string
  sha256: string
  inputs: string[]
  outputs: string[]
}

export interface GoldenTensor { shape: number[], data?: number[], file?: string }

export interface GoldenCase {
  image: string
  expression: string
  tokens: number[]
  input: GoldenTensor
  outputs: Record<string, GoldenTensor>
  mask?: { file: string, width: number, height: number, threshold?: number }
  tolerance: { atol: number, rtol?: number }
}

export interface Manifest {
  /** Absolute folder. */
  dir: string
  name: string
  version: string
  preset?: string
  input: InputSpec
  /** m: side of the mask logits (S / stride). */
  maskSize: number
  stride: number
  threshold: number
  /** L */
  maxWords: number
  /** Nq */
  numQueries: number
  /** model.json `onnx` (model.onnx); absent in a folder that ships only the split graphs. */
  onnx?: OnnxFile
  split?: { image_encoder: OnnxFile, head: OnnxFile }
  vocab: { file: string, padId: number, unkId: number, size?: number }
  golden?: string
  /** The parsed model.json, for /metrics and diagnostics. */
  raw: Record<string, any>
}

export class ManifestError extends Error {
  constructor (message: string) {
    super(message)
    this.name = 'ManifestError'
  }
}

/** PIL filter names → the sharp kernel that reproduces them best (measured in test/image). */
const KERNELS: Record<string, SharpKernel> = {
  bicubic: 'cubic',
  bilinear: 'linear',
  lanczos: 'lanczos3',
  nearest: 'nearest',
}

function need<T> (value: T | undefined | null, what: string): T {
  if (value === undefined || value === null) throw new ManifestError(`model.json: missing ${what}`)
  return value
}

function positiveInt (value: unknown, what: string): number {
  if (!Number.isInteger(value) || (value as number) <= 0) throw new ManifestError(`model.json: ${what} must be a positive integer, got ${JSON.stringify(value)}`)
  return value as number
}

/** Parse and check model.json (no file access beyond the JSON itself). */
export function parseManifest (raw: Record<string, any>, dir: string): Manifest {
  const input = need(raw.input, 'input')
  const output = need(raw.output, 'output')
  const size = positiveInt(input.size, 'input.size')
  const stride = positiveInt(output.stride ?? 1, 'output.stride')
  const maskSize = positiveInt(output.mask_size ?? size / stride, 'output.mask_size')
  const resize = String(input.resize ?? 'bicubic').toLowerCase()
  const kernel = KERNELS[resize]
  if (kernel === undefined) throw new ManifestError(`model.json: unsupported input.resize ${JSON.stringify(input.resize)}`)
  if (input.letterbox !== undefined && !['centre', 'center'].includes(String(input.letterbox))) {
    throw new ManifestError(`model.json: unsupported input.letterbox ${JSON.stringify(input.letterbox)}`)
  }
  if (input.channels !== undefined && input.channels !== 'RGB') throw new ManifestError(`model.json: unsupported input.channels ${JSON.stringify(input.channels)}`)
  const threshold = Number(need(output.threshold, 'output.threshold'))
  if (!isThreshold(threshold)) throw new ManifestError(`model.json: output.threshold must be in [0, 1], got ${output.threshold}`)
  const maxWords = positiveInt(raw.max_words ?? raw.tokenizer?.max_words, 'max_words')
  const numQueries = positiveInt(raw.num_queries ?? raw.config?.num_queries, 'num_queries')

  const hasSplit = raw.split?.image_encoder !== undefined || raw.split?.head !== undefined
  if (raw.onnx === undefined && !hasSplit) throw new ManifestError('model.json: missing onnx (model.onnx) and split (image_encoder.onnx + head.onnx); one of them is needed')
  const onnx = raw.onnx !== undefined ? parseOnnxFile(raw.onnx, 'onnx') : undefined
  if (onnx !== undefined) {
    expectNames(onnx.inputs, GRAPH_INPUTS, 'onnx.inputs')
    expectNames(onnx.outputs, GRAPH_OUTPUTS, 'onnx.outputs')
  }
  let split: Manifest['split']
  if (hasSplit) {
    split = { image_encoder: parseOnnxFile(need(raw.split.image_encoder, 'split.image_encoder'), 'split.image_encoder'), head: parseOnnxFile(need(raw.split.head, 'split.head'), 'split.head') }
    expectNames(split.image_encoder.inputs, ['image'], 'split.image_encoder.inputs')
    if (split.image_encoder.outputs.length === 0) throw new ManifestError('model.json: split.image_encoder.outputs is empty')
    expectNames(split.head.inputs, [...split.image_encoder.outputs, 'tokens'], 'split.head.inputs')
    expectNames(split.head.outputs, GRAPH_OUTPUTS, 'split.head.outputs')
  }

  const vocab = raw.vocab ?? {}
  const tok = raw.tokenizer
  if (tok !== undefined) {
    if (tok.normalization !== undefined && tok.normalization !== 'NFKC') throw new ManifestError(`model.json: unsupported tokenizer.normalization ${JSON.stringify(tok.normalization)}`)
    if (tok.lowercase === false) throw new ManifestError('model.json: tokenizer.lowercase=false is not supported')
    if (tok.max_words !== undefined && tok.max_words !== maxWords) throw new ManifestError(`model.json: tokenizer.max_words ${tok.max_words} differs from max_words ${maxWords}`)
  }
  const mean = input.mean ?? null
  const std = input.std ?? null
  return {
    dir,
    name: String(need(raw.name, 'name')),
    version: String(need(raw.version, 'version')),
    preset: raw.preset !== undefined ? String(raw.preset) : undefined,
    input: {
      size,
      padValue: Number(input.pad_value ?? 0.5),
      scale: Number(input.scale ?? 1 / 255),
      mean: Array.isArray(mean) ? mean.map(Number) : (typeof mean === 'number' ? [mean, mean, mean] : null),
      std: Array.isArray(std) ? std.map(Number) : (typeof std === 'number' ? [std, std, std] : null),
      kernel,
    },
    maskSize,
    stride,
    threshold,
    maxWords,
    numQueries,
    onnx,
    split,
    vocab: {
      file: String(vocab.file ?? 'vocab.txt'),
      padId: Number(vocab.pad_id ?? PAD_ID),
      unkId: Number(vocab.unk_id ?? UNK_ID),
      size: vocab.size !== undefined ? Number(vocab.size) : undefined,
    },
    golden: typeof raw.golden === 'string' ? raw.golden : (raw.golden?.file as string | undefined),
    raw,
  }
}

function expectNames (have: string[], want: readonly string[], where: string): void {
  for (const n of want) if (!have.includes(n)) throw new ManifestError(`model.json: ${where} lacks ${JSON.stringify(n)} (has ${have.join(', ')})`)
}

function parseOnnxFile (o: any, where: string): OnnxFile {
  return {
    file: String(need(o.file, `${where}.file`)),
    sha256: String(need(o.sha256, `${where}.sha256`)).toLowerCase(),
    inputs: (need(o.inputs, `${where}.inputs`) as unknown[]).map(String),
    outputs: (need(o.outputs, `${where}.outputs`) as unknown[]).map(String),
  }
}

export async function sha256File (file: string): Promise<string> {
  const hash = createHash('sha256')
  for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer)
  return hash.digest('hex')
}

export interface ModelFolder {
  manifest: Manifest
  vocab: string[]
  /** What the engine loads and runs: the verified graph files (split ones too, when listed), sizes, golden case. */
  graphs: ModelGraphs
}

/**
 * Read model.json, vocab.txt and golden.json, and verify the sha256 of every graph file.
 * Throws ManifestError.
 */
export async function loadModelFolder (folder: string): Promise<ModelFolder> {
  const dir = path.resolve(folder)
  let text: string
  try {
    text = await readFile(path.join(dir, 'model.json'), 'utf8')
  } catch {
    throw new ManifestError(`no model.json in model folder ${dir}`)
  }
  let raw: Record<string, any>
  try {
    raw = JSON.parse(text)
  } catch (err) {
    throw new ManifestError(`model.json is not valid JSON: ${(err as Error).message}`)
  }
  const manifest = parseManifest(raw, dir)
  const modelFile = manifest.onnx !== undefined ? path.join(dir, manifest.onnx.file) : undefined
  if (modelFile !== undefined) await verifyFile(modelFile, manifest.onnx!.sha256)

  let vocabText: string
  try {
    vocabText = await readFile(path.join(dir, manifest.vocab.file), 'utf8')
  } catch {
    throw new ManifestError(`vocabulary file ${manifest.vocab.file} is missing from ${dir}`)
  }
  const vocab = parseVocab(vocabText)
  if (manifest.vocab.size !== undefined && manifest.vocab.size !== vocab.length) {
    throw new ManifestError(`${manifest.vocab.file} has ${vocab.length} words; model.json says ${manifest.vocab.size}`)
  }
  if (vocab.length <= Math.max(manifest.vocab.padId, manifest.vocab.unkId)) throw new ManifestError(`${manifest.vocab.file} is too short (${vocab.length} lines)`)

  const golden = await loadGolden(manifest)
  let split: ModelGraphs['split']
  if (manifest.split !== undefined) {
    const { image_encoder: enc, head } = manifest.split
    split = { encoderFile: path.join(dir, enc.file), headFile: path.join(dir, head.file), featureNames: enc.outputs }
    await verifyFile(split.encoderFile, enc.sha256)
    await verifyFile(split.headFile, head.sha256)
  }
  const graphs = engineModel(manifest, { modelFile, split }, golden !== undefined ? goldenCheck(golden) : undefined)
  return { manifest, vocab, graphs }
}

/** What the engine needs of a model: its graph files, the sizes S, m, L, Nq, and the golden case. */
export function engineModel (manifest: Manifest, files: GraphFiles, golden?: GoldenCheck): ModelGraphs {
  const { maskSize, maxWords, numQueries } = manifest
  return { ...files, size: manifest.input.size, maskSize, maxWords, numQueries, golden }
}

/** What the backbone features of an image depend on besides its bytes: preprocessing and encoder. */
export function featureSalt (manifest: Manifest): string {
  // parseManifest guarantees one of the two
  return JSON.stringify({ input: manifest.input, encoder: manifest.split?.image_encoder.sha256 ?? manifest.onnx!.sha256 })
}

export async function verifyFile (file: string, sha256: string): Promise<void> {
  try {
    await stat(file)
  } catch {
    throw new ManifestError(`${path.basename(file)} is missing from ${path.dirname(file)}`)
  }
  const actual = await sha256File(file)
  if (actual !== sha256) {
    throw new ManifestError(`${path.basename(file)} sha256 ${actual} does not match model.json (${sha256}); refusing to serve a different model`)
  }
}

/** Read golden.json (if the manifest names one) and its tensors. */
export interface Golden {
  case: GoldenCase
  dir: string
  input: Float32Array
  outputs: Record<string, Float32Array>
}

export async function loadGolden (manifest: Manifest): Promise<Golden | undefined> {
  if (manifest.golden === undefined) return undefined
  const file = path.join(manifest.dir, manifest.golden)
  const c = JSON.parse(await readFile(file, 'utf8')) as GoldenCase
  const tensor = async (t: GoldenTensor, what: string): Promise<Float32Array> => {
    if (t.data !== undefined) return Float32Array.from(t.data.flat(Infinity as 1) as number[])
    if (t.file !== undefined) return readF32(path.join(manifest.dir, t.file))
    throw new ManifestError(`golden.json: ${what} has neither data nor file`)
  }
  const outputs: Record<string, Float32Array> = {}
  for (const [name, t] of Object.entries(c.outputs)) outputs[name] = await tensor(t, `outputs.${name}`)
  return { case: c, dir: manifest.dir, input: await tensor(c.input, 'input'), outputs }
}

/** The golden case as every engine worker runs it before it reports ready. */
function goldenCheck (golden: Golden): GoldenCheck {
  const { tokens, tolerance } = golden.case
  return { input: golden.input, tokens, outputs: golden.outputs, atol: tolerance?.atol ?? 1e-3, rtol: tolerance?.rtol ?? 0 }
}

/** Raw little-endian float32, C order. */
export async function readF32 (file: string): Promise<Float32Array> {
  const buf = await readFile(file)
  const out = new Float32Array(buf.length / 4)
  for (let i = 0; i < out.length; i++) out[i] = buf.readFloatLE(i * 4)
  return out
}
