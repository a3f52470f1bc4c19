// Maximum-size uploads for the memory measurements (bench/memory.mjs) and the container test
// (docker/test.sh): 40-megapixel images within MAX_IMAGE_BYTES, each a different decoding path.
//
//   node bench/large-images.mjs OUT_DIR [--all]
//
//   40mp.jpg              7296×5472 baseline JPEG of a smooth random picture (about 9–12 MB)
//   40mp-progressive.jpg  the same, progressive (the decoder keeps every coefficient)
//   40mp-1bit.png         7296×5472 palette PNG, 1 bit per pixel: a few kB that decode to 120 MB of RGB
//   40mp-3pages.tif       three 7296×5472 pages, deflate (only the first is decoded)
//   --all adds 40mp.webp (lossy WebP, slow to encode)
//
// sharp is taken from the current directory's node_modules, so the script also runs inside the
// service's image (docker run -w /app … node /large-images.mjs /out).
import { mkdirSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import path from 'node:path'

const sharp = createRequire(path.join(process.cwd(), 'package.json'))('sharp')
export const WIDTH = 7296
export const HEIGHT = 5472

/** Writes the images into `dir`; returns their file names. */
export async function makeLargeImages (dir, { all = false } = {}) {
  mkdirSync(dir, { recursive: true })
  const written = []
  const write = (name, buf) => { writeFileSync(path.join(dir, name), buf); written.push(name) }
  // A photo-like picture: smooth, so that a 40 MP JPEG stays within 20 MiB. Seeded, so runs agree.
  let seed = 12345
  const rand = () => { seed = (seed * 1103515245 + 12345) >>> 0; return seed >>> 24 }
  const sw = WIDTH / 8
  const sh = HEIGHT / 8
  const small = Buffer.alloc(sw * sh * 3)
  for (let i = 0; i < small.length; i++) small[i] = rand()
  const photo = () => sharp(small, { raw: { width: sw, height: sh, channels: 3 } }).resize(WIDTH, HEIGHT, { kernel: 'cubic' })
  const jpg = await photo().jpeg({ quality: 85 }).toBuffer()
  write('40mp.jpg', jpg)
  write('40mp-progressive.jpg', await sharp(jpg).jpeg({ quality: 85, progressive: true }).toBuffer())
  // A white rectangle on black, as a 2-colour palette: 1 bit per pixel, compresses to kB.
  const blank = () => sharp({ create: { width: WIDTH, height: HEIGHT, channels: 3, background: { r: 0, g: 0, b: 0 } } })
  const rect = { input: { create: { width: 2400, height: 1800, channels: 3, background: { r: 255, g: 255, b: 255 } } }, left: 2400, top: 1800 }
  write('40mp-1bit.png', await blank().composite([rect]).png({ palette: true, colours: 2, compressionLevel: 9 }).toBuffer())
  const page = await blank().composite([rect]).png({ compressionLevel: 1 }).toBuffer()
  write('40mp-3pages.tif', await sharp([page, page, page], { join: { animated: true } }).tiff({ compression: 'deflate' }).toBuffer())
  if (all) write('40mp.webp', await photo().webp({ quality: 75, effort: 0 }).toBuffer())
  return written
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const out = process.argv[2]
  if (out === undefined) { console.error('usage: node bench/large-images.mjs OUT_DIR [--all]'); process.exit(2) }
  for (const name of await makeLargeImages(out, { all: process.argv.includes('--all') })) console.log(name)
}
