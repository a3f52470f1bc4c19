/**
 * The try-it page (GET /) in headless Chromium against the real app and model: upload an image,
 * type a phrase, press Enter; the drawn mask must equal POST /segment's mask for the same
 * request, the query panel must list the model's Nq queries, and every kind of error shows the
 * API's message.
 *
 * Needs Debian's chromium (`apt-get install -y chromium`) and the default model folder (MODEL_PATH's
 * default); skipped, with the reason, without either. Screenshots go to test/e2e/output/;
 * docs/page.png is written when it is missing or when UPDATE_DOCS_SCREENSHOT=1 (`npm run docs:screenshot`), with the model's
 * name@version in a PNG tEXt chunk (test/docs-screenshot.test.ts checks it against model.json).
 * Code run in the page (page.evaluate) reaches the document through globalThis: this file is
 * type-checked without the DOM library.
 */
import t, { type Test } from 'tap'
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import sharp from 'sharp'
import type { FastifyInstance } from 'fastify'
import type { Browser, Page } from 'playwright-core'
import { buildApp } from '../../src/app.js'
import { DEFAULT_MODEL_DIR, form, readMask, testConfig } from '../helper.js'
import { spec } from '../openapi-validator.js'
import { withPngText } from '../png-text.js'

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..')
const CHROMIUM = '/usr/bin/chromium'
const MODEL_DIR = DEFAULT_MODEL_DIR
const OUTPUT = path.join(ROOT, 'test', 'e2e', 'output')
const DOCS_SHOT = path.join(ROOT, 'docs', 'page.png')
const EXAMPLES = path.join(ROOT, 'src', 'public', 'examples')
const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync']

if (!existsSync(CHROMIUM)) {
  t.comment(`${CHROMIUM} is missing; install it with: apt-get update && apt-get install -y chromium`)
  t.pass(`skipped: no ${CHROMIUM}`)
} else if (!existsSync(path.join(MODEL_DIR, 'model.json'))) {
  t.comment(`no model folder at ${MODEL_DIR}`)
  t.pass('skipped: no model folder')
} else {
  const { chromium } = await import('playwright-core')
  const modelJson = JSON.parse(readFileSync(path.join(MODEL_DIR, 'model.json'), 'utf8'))
  const numQueries: number = modelJson.config.num_queries
  const { examples } = JSON.parse(readFileSync(path.join(EXAMPLES, 'examples.json'), 'utf8'))
  const example = examples[0]
  const exampleFile = path.join(EXAMPLES, example.file)
  const exampleImage = readFileSync(exampleFile)

  const app: FastifyInstance = buildApp(testConfig({ modelPath: MODEL_DIR, maxBatchWaitMs: 2, maxImageBytes: 256 * 1024 }))
  t.teardown(() => app.close())
  await app.listen({ host: '127.0.0.1', port: 0 })
  await app.segmenter.started
  const address = app.server.address()
  const base = `http://127.0.0.1:${typeof address === 'object' && address !== null ? address.port : 0}`

  const browser: Browser = await chromium.launch({ executablePath: CHROMIUM, args: ARGS, headless: true })
  t.teardown(() => browser.close())
  mkdirSync(OUTPUT, { recursive: true })

  /** What the API itself answers for the same form. */
  const api = async (fields: Parameters<typeof form>[0]): Promise<{ status: number, body: any }> => {
    const res = await fetch(`${base}/segment`, { method: 'POST', body: form(fields), headers: { accept: 'application/json' } })
    return { status: res.status, body: await res.json() }
  }

  /** The overlay canvas's alpha channel (0 or 255 per pixel), as drawn. */
  const overlayAlpha = async (page: Page): Promise<{ width: number, height: number, alpha: Buffer }> => {
    const { width, height, b64 } = await page.evaluate(() => {
      const c = (globalThis as any).document.getElementById('overlay')
      const d = c.getContext('2d')!.getImageData(0, 0, c.width, c.height).data
      const a = new Uint8Array(d.length / 4)
      for (let i = 0; i < a.length; i++) a[i] = d[i * 4 + 3]
      let s = ''
      for (let i = 0; i < a.length; i += 8192) s += String.fromCharCode(...a.subarray(i, i + 8192))
      return { width: c.width, height: c.height, b64: btoa(s) }
    })
    return { width, height, alpha: Buffer.from(b64, 'base64') }
  }

  /** A canvas's RGBA pixels, as drawn. */
  const canvasPixels = async (page: Page, id: string): Promise<{ width: number, height: number, rgba: Buffer }> => {
    const { width, height, b64 } = await page.evaluate((id) => {
      const c = (globalThis as any).document.getElementById(id)
      const d = c.getContext('2d')!.getImageData(0, 0, c.width, c.height).data
      let s = ''
      for (let i = 0; i < d.length; i += 8192) s += String.fromCharCode(...d.subarray(i, i + 8192))
      return { width: c.width, height: c.height, b64: btoa(s) }
    }, id)
    return { width, height, rgba: Buffer.from(b64, 'base64') }
  }
  /** WCAG relative luminance of an sRGB colour. */
  const luminance = (r: number, g: number, b: number): number => {
    const lin = (v: number): number => { const c = v / 255; return c <= 0.04045 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4 }
    return 0.2126 * lin(r) + 0.7152 * lin(g) + 0.0722 * lin(b)
  }

  /**
   * The mask stays visible whatever colour the shape has: its fill has a light part and a dark
   * part (luminance >= 0.7 and <= 0.05: one of them contrasts at least 3:1 with any colour), and an
   * opaque outline with a light and a dark ring surrounds it, outside the mask only.
   */
  const visibleOnAnyColour = async (tt: Test, page: Page, png: string): Promise<void> => {
    const mask = await readMask(Buffer.from(png, 'base64'))
    const fill = await canvasPixels(page, 'overlay')
    const outline = await canvasPixels(page, 'outline-layer')
    tt.strictSame([outline.width, outline.height], [mask.width, mask.height], 'outline at the mask\'s size')
    const fillLum = { light: 0, dark: 0, on: 0 }
    const ring = { light: 0, dark: 0, inside: 0, opaque: 0 }
    for (let p = 0; p < mask.data.length; p++) {
      const on = mask.data[p] >= 128
      const f = fill.rgba.subarray(4 * p, 4 * p + 4)
      if (on) {
        fillLum.on++
        const l = luminance(f[0], f[1], f[2])
        if (l >= 0.7) fillLum.light++
        if (l <= 0.05) fillLum.dark++
      }
      const o = outline.rgba.subarray(4 * p, 4 * p + 4)
      if (o[3] === 255) {
        ring.opaque++
        if (on) ring.inside++
        const l = luminance(o[0], o[1], o[2])
        if (l >= 0.7) ring.light++
        if (l <= 0.05) ring.dark++
      }
    }
    tt.ok(fillLum.on > 0, `a mask to look at (${fillLum.on} pixels)`)
    tt.ok(fillLum.light >= 0.25 * fillLum.on && fillLum.dark >= 0.25 * fillLum.on, `fill: light ${fillLum.light} and dark ${fillLum.dark} of ${fillLum.on} mask pixels`)
    tt.equal(ring.inside, 0, 'the outline leaves the mask itself alone')
    tt.ok(ring.light > 0 && ring.dark > 0 && ring.light + ring.dark === ring.opaque, `outline: light ${ring.light} and dark ${ring.dark} pixels`)
  }

  const sameMask = async (tt: Test, page: Page, png: string, what: string): Promise<void> => {
    const drawn = await overlayAlpha(page)
    const mask = await readMask(Buffer.from(png, 'base64'))
    tt.strictSame([drawn.width, drawn.height], [mask.width, mask.height], `${what}: overlay has the mask's size`)
    let differ = 0
    let on = 0
    for (let i = 0; i < mask.data.length; i++) {
      if ((mask.data[i] >= 128) !== (drawn.alpha[i] === 255)) differ++
      if (mask.data[i] >= 128) on++
    }
    tt.equal(differ, 0, `${what}: every overlay pixel matches the API's mask (${on} of ${mask.data.length} on)`)
  }

  const waitRendered = async (page: Page, after: number): Promise<void> => {
    await page.waitForFunction((n) => {
      const s = (globalThis as any).document.getElementById('stage')
      return s.dataset.state === 'done' && Number(s.dataset.renders ?? 0) > n
    }, after, { timeout: 30_000 })
  }
  const renders = async (page: Page): Promise<number> => await page.evaluate(() => Number((globalThis as any).document.getElementById('stage').dataset.renders ?? 0))

  t.test('upload, describe, see the mask and the queries', async (t) => {
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } })
    t.teardown(() => page.close())
    const pageErrors: string[] = []
    page.on('pageerror', (e) => pageErrors.push(e.message))
    page.on('console', (m) => { if (m.type() === 'error') pageErrors.push(m.text()) })

    await page.goto(`${base}/`)
    await page.waitForSelector('#model-status strong')
    t.match(await page.textContent('#model-status'), `${modelJson.name}@${modelJson.version}`)
    t.match(await page.textContent('#model-status'), /ready/)

    // The first Tab stop is the (visually hidden) file input.
    await page.keyboard.press('Tab')
    t.equal(await page.evaluate(() => (globalThis as any).document.activeElement?.id), 'file', 'Tab reaches the file input first')

    const expression = example.expressions[0]
    await page.setInputFiles('#file', exampleFile)
    await page.fill('#expression', expression)
    await page.press('#expression', 'Enter')
    await waitRendered(page, 0)

    const direct = await api({ image: { data: exampleImage, filename: example.file, type: 'image/jpeg' }, expression, threshold: '0.35' })
    t.equal(direct.status, 200)
    const r = direct.body.results[0]
    await sameMask(t, page, r.mask.png, 'threshold 0.35')
    await visibleOnAnyColour(t, page, r.mask.png)

    t.equal(await page.locator('#query-list .query').count(), numQueries, `the query panel lists Nq=${numQueries} queries`)
    const shown = await page.$$eval('#query-list .query', (lis) => lis.map((li) => ({
      index: Number((li as any).dataset.query),
      confidence: Number(li.querySelector('.conf')!.textContent),
      tokens: [...li.querySelectorAll('.tok')].map((s) => s.textContent),
    })))
    const sorted = [...r.queries.map((q: any, i: number) => ({ i, c: q.confidence }))].sort((a, b) => b.c - a.c)
    t.strictSame(shown.map((q) => q.confidence), sorted.map((q) => Number(q.c.toFixed(3))), 'confidences shown, highest first')
    t.strictSame(new Set(shown.map((q) => q.index)).size, numQueries, 'each query once')
    for (const q of shown) t.strictSame(q.tokens, r.tokens.map((tok: any) => tok.text), `Q${q.index + 1}: a heat strip over the tokens`)
    t.equal(await page.textContent('#score'), r.score.toFixed(3), 'mask score shown')
    t.match(await page.textContent('#timings'), new RegExp(`total [0-9.]+ ms — ${modelJson.name}@${modelJson.version.replace(/\./g, '\\.')} on cpu`))

    // A new threshold asks again (debounced) and redraws. Pick one (on the slider's 0.001 grid)
    // where the mask is neither empty nor full, so that the comparison says something.
    const total = direct.body.image.width * direct.body.image.height
    const areaAt = async (milli: number): Promise<number> =>
      (await api({ image: { data: exampleImage, filename: example.file, type: 'image/jpeg' }, expression, threshold: String(milli / 1000) })).body.results[0].area
    let lo = 0
    let hi = 1000
    let mixed: number | undefined
    for (let i = 0; i < 12 && mixed === undefined && hi - lo > 1; i++) {
      const mid = Math.round((lo + hi) / 2)
      const area = await areaAt(mid)
      if (area === total) lo = mid
      else if (area === 0) hi = mid
      else mixed = mid
    }
    t.ok(mixed !== undefined, `a threshold with a partial mask: ${String(mixed)}/1000`)
    const threshold = String((mixed ?? 600) / 1000)
    const before = await renders(page)
    await page.fill('#threshold', threshold)
    await waitRendered(page, before)
    t.equal(await page.textContent('#threshold-value'), Number(threshold).toFixed(3))
    const again = await api({ image: { data: exampleImage, filename: example.file, type: 'image/jpeg' }, expression, threshold })
    await sameMask(t, page, again.body.results[0].mask.png, `threshold ${threshold}`)
    t.equal(await page.textContent('#score'), again.body.results[0].score.toFixed(3), 'mask score follows')

    // Bundled examples: a click loads one and offers phrases; a chip segments at once.
    const n = await renders(page)
    await page.click('.example >> nth=1')
    await page.waitForSelector('#suggestions .chip')
    const chip = await page.textContent('#suggestions .chip >> nth=0')
    t.equal(chip, examples[1].expressions[0])
    await page.click('#suggestions .chip >> nth=0')
    await waitRendered(page, n)
    t.equal(await page.inputValue('#expression'), chip)
    t.equal(await page.getAttribute('.example >> nth=1', 'aria-pressed'), 'true')

    await page.screenshot({ path: path.join(OUTPUT, 'page.png'), fullPage: true })
    if (!existsSync(DOCS_SHOT) || process.env.UPDATE_DOCS_SCREENSHOT === '1') {
      mkdirSync(path.dirname(DOCS_SHOT), { recursive: true })
      // a palette PNG: a quarter of the size, no visible difference for a page of flat colours
      const shot = await sharp(path.join(OUTPUT, 'page.png')).png({ palette: true, compressionLevel: 9 }).toBuffer()
      writeFileSync(DOCS_SHOT, withPngText(shot, { model: `${modelJson.name as string}@${modelJson.version as string}` }))
    }
    t.strictSame(pageErrors, [], 'no script errors')
  })

  t.test('the API\'s error messages are shown', async (t) => {
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } })
    t.teardown(() => page.close())
    await page.goto(`${base}/`)

    const text = Buffer.from('this is not an image\n')
    await page.setInputFiles('#file', { name: 'notes.txt', mimeType: 'text/plain', buffer: text })
    await page.fill('#expression', 'the blue shape')
    await page.press('#expression', 'Enter')
    await page.waitForSelector('#error:not([hidden])')
    const unsupported = await api({ image: { data: text, filename: 'notes.txt', type: 'text/plain' }, expression: 'the blue shape' })
    t.equal(unsupported.status, 415)
    t.equal(await page.textContent('#error .error-message'), unsupported.body.error.message, 'unsupported file: the API\'s message')
    t.match(await page.textContent('#error code'), `415 ${unsupported.body.error.code as string}`)

    await page.setInputFiles('#file', exampleFile)
    await page.waitForSelector('#error', { state: 'hidden' })
    await page.fill('#expression', 'zzyzx qwxv')
    await page.press('#expression', 'Enter')
    await page.waitForSelector('#error:not([hidden])')
    const unknown = await api({ image: { data: exampleImage, filename: example.file, type: 'image/jpeg' }, expression: 'zzyzx qwxv' })
    t.equal(unknown.status, 422)
    t.equal(await page.textContent('#error .error-message'), unknown.body.error.message, 'unknown words: the API\'s message')

    const big = Buffer.alloc(300 * 1024, 7)
    big.set([0xff, 0xd8, 0xff, 0xe0])
    await page.setInputFiles('#file', { name: 'big.jpg', mimeType: 'image/jpeg', buffer: big })
    await page.fill('#expression', 'the blue shape')
    await page.press('#expression', 'Enter')
    await page.waitForSelector('#error:not([hidden])')
    const tooLarge = await api({ image: { data: big, filename: 'big.jpg', type: 'image/jpeg' }, expression: 'the blue shape' })
    t.equal(tooLarge.status, 413)
    t.equal(await page.textContent('#error .error-message'), tooLarge.body.error.message, 'too large: the API\'s message')

    await page.fill('#expression', '   ')
    await page.press('#expression', 'Enter')
    t.match(await page.textContent('#error .error-message'), /Type a phrase/)
  })

  t.test('/docs: Swagger UI renders the operations with nothing from elsewhere', async (t) => {
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } })
    t.teardown(() => page.close())
    const elsewhere: string[] = []
    await page.route('**/*', async (route) => {
      if (route.request().url().startsWith(base)) await route.continue()
      else { elsewhere.push(route.request().url()); await route.abort() }
    })
    const pageErrors: string[] = []
    page.on('pageerror', (e) => pageErrors.push(e.message))
    await page.goto(`${base}/docs`)
    await page.waitForSelector('.opblock', { timeout: 30_000 })
    const ops = await page.$$eval('.opblock-summary-path', (els) => els.map((e) => e.textContent?.replace(/\u200b/g, '').trim()))
    t.strictSame([...new Set(ops)].sort(), Object.keys(spec.paths).sort(), 'every path of openapi.yaml')
    t.strictSame(elsewhere, [], 'no request leaves this origin')
    t.strictSame(pageErrors, [], 'no script errors')
  })

  t.test('readable at phone width', async (t) => {
    const page = await browser.newPage({ viewport: { width: 375, height: 812 }, deviceScaleFactor: 2 })
    t.teardown(() => page.close())
    await page.goto(`${base}/`)
    await page.setInputFiles('#file', exampleFile)
    await page.fill('#expression', example.expressions[0])
    await page.press('#expression', 'Enter')
    await waitRendered(page, 0)
    const { scrollWidth, clientWidth } = await page.evaluate(() => ({ scrollWidth: (globalThis as any).document.documentElement.scrollWidth, clientWidth: (globalThis as any).document.documentElement.clientWidth }))
    t.ok(scrollWidth <= clientWidth, `no horizontal scrolling (${scrollWidth} ≤ ${clientWidth})`)
    await page.screenshot({ path: path.join(OUTPUT, 'page-phone.png'), fullPage: true })
  })
}
