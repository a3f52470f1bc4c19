/**
 * docs/page.png shows the shipped default model: the model (name@version) recorded in the
 * screenshot's PNG metadata and named in the README's caption must be the model.json of MODEL_PATH's
 * default folder.
 * When the model changes, `npm run docs:screenshot` retakes it (headless Chromium, test/e2e).
 */
import t from 'tap'
import { readFileSync } from 'node:fs'
import sharp from 'sharp'
import path from 'node:path'
import { DEFAULT_MODEL_DIR } from './helper.js'
import { readPngText, withPngText } from './png-text.js'

const root = new URL('../', import.meta.url)
const model = JSON.parse(readFileSync(path.join(DEFAULT_MODEL_DIR, 'model.json'), 'utf8'))
const expected = `${model.name as string}@${model.version as string}`
const FIX = 'run `npm run docs:screenshot` to retake docs/page.png (and update the README caption)'

t.test('the screenshot records the shipped model', async (t) => {
  const png = readFileSync(new URL('docs/page.png', root))
  const text = readPngText(png)
  t.equal(text.model, expected, `docs/page.png metadata model=${String(text.model)}; ${FIX}`)
  const meta = await sharp(png).metadata()
  t.ok((meta.width ?? 0) >= 800, 'a full page screenshot')
})

t.test('the README caption names the same model', async (t) => {
  const readme = readFileSync(new URL('README.md', root), 'utf8')
  const caption = /!\[([^\]]*)\]\(docs\/page\.png\)/.exec(readme)?.[1]
  t.ok(caption !== undefined, 'README shows docs/page.png')
  t.match(caption ?? '', expected, `the caption names ${expected}; ${FIX}`)
})

t.test('PNG text chunks: written, read back, replaced; the image is unchanged', async (t) => {
  const png = await sharp({ create: { width: 3, height: 2, channels: 3, background: '#c00' } }).png().toBuffer()
  t.strictSame(readPngText(png), {})
  const once = withPngText(png, { model: 'a@1' })
  t.strictSame(readPngText(once), { model: 'a@1' })
  const twice = withPngText(once, { model: 'a@2', note: 'x' })
  t.strictSame(readPngText(twice), { model: 'a@2', note: 'x' })
  const pixels = async (b: Buffer): Promise<Buffer> => await sharp(b).raw().toBuffer()
  t.same(await pixels(twice), await pixels(png), 'same pixels')
})
