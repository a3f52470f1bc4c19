/**
 * The page's model picker in headless Chromium, against two fake models from MODELS_DIR: hidden
 * with one model, shown with two (the default one selected), and the chosen model answers. The
 * page and routes are the real ones; the models are the fake engine (test/fixtures/fake-worker.ts).
 * Needs Debian's chromium; skipped, with the reason, without it.
 */
import t from 'tap'
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import type { AddressInfo } from 'node:net'
import type { Page } from 'playwright-core'
import { buildApp } from '../../src/app.js'
import { fakeFolderLoader, testConfig, writeFakeModel } from '../helper.js'

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..')
const CHROMIUM = '/usr/bin/chromium'
const EXAMPLES = path.join(ROOT, 'src', 'public', 'examples')
const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync']

if (!existsSync(CHROMIUM)) {
  t.pass(`skipped: no ${CHROMIUM}`)
} else {
  const { chromium } = await import('playwright-core')
  const example = JSON.parse(readFileSync(path.join(EXAMPLES, 'examples.json'), 'utf8')).examples[0]
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ARGS, headless: true })
  t.teardown(() => browser.close())

  const serve = async (names: Array<[string, string, Record<string, unknown>?]>): Promise<string> => {
    const root = mkdtempSync(path.join(os.tmpdir(), 'vlt-page-models-'))
    t.teardown(() => rmSync(root, { recursive: true, force: true }))
    for (const [name, version, json] of names) writeFakeModel(root, name, version, { json })
    const config = testConfig({ modelsDir: root })
    const app = buildApp(config, { loadFolder: fakeFolderLoader(config) })
    t.teardown(() => app.close())
    await app.listen({ host: '127.0.0.1', port: 0 })
    await app.models.started
    return `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`
  }

  const segmentWith = async (page: Page, model?: string): Promise<string> => {
    if (model !== undefined) await page.selectOption('#model', model)
    const before = await page.evaluate(() => Number((globalThis as any).document.getElementById('stage').dataset.renders ?? 0))
    await page.fill('#expression', 'the white circle')
    await page.press('#expression', 'Enter')
    await page.waitForFunction((n) => Number((globalThis as any).document.getElementById('stage').dataset.renders ?? 0) > n, before, { timeout: 60_000 })
    return (await page.textContent('#timings')) ?? ''
  }

  t.test('two models: the picker lists both, the default is selected, the chosen one answers', async (t) => {
    const base = await serve([['alpha', '1.0.0'], ['beta', '2.0.0']])
    const page = await browser.newPage()
    t.teardown(() => page.close())
    const errors: string[] = []
    page.on('pageerror', (e) => errors.push(e.message))
    await page.goto(`${base}/`)
    await page.waitForSelector('#model-field:not([hidden])')
    t.strictSame(await page.$$eval('#model option', (os) => os.map((o: any) => [o.value, o.textContent, o.selected])), [
      ['alpha', 'alpha 1.0.0 (default)', true],
      ['beta', 'beta 2.0.0', false],
    ])
    await page.setInputFiles('#file', path.join(EXAMPLES, example.file))
    t.match(await segmentWith(page), /alpha@1\.0\.0/, 'the default model answered')
    t.match(await segmentWith(page, 'beta'), /beta@2\.0\.0/, 'the chosen model answered')
    t.strictSame(errors, [])
  })

  t.test("the answering model's query figures from its model.json; none when it records none", async (t) => {
    const queries = { n: 1000, confidence_range: 0.25, attention_tv: 0.125, top_word_agreement: 0.5 }
    const base = await serve([['alpha', '1.0.0'], ['beta', '2.0.0', { metrics: { queries_val: queries, val: { overall: { mIoU: 70.04 } } } }]])
    const page = await browser.newPage()
    t.teardown(() => page.close())
    await page.goto(`${base}/`)
    await page.waitForSelector('#model-field:not([hidden])')
    await page.setInputFiles('#file', path.join(EXAMPLES, example.file))
    await segmentWith(page)
    t.equal(await page.isHidden('#model-figures'), true, 'alpha records no query figures')
    await segmentWith(page, 'beta')
    const text = (await page.textContent('#model-figures')) ?? ''
    t.match(text, /^beta 2\.0\.0 on its validation set \(1000 phrases\): mIoU 70\.0;/)
    t.match(text, /span 0\.250 \(max − min\)/)
    t.match(text, /differ by 0\.125 /)
    t.match(text, /50 % of query pairs/)
  })

  t.test('one model: no picker', async (t) => {
    const base = await serve([['alpha', '1']])
    const page = await browser.newPage()
    t.teardown(() => page.close())
    await page.goto(`${base}/`)
    await page.waitForSelector('#model-status strong')
    // loadModels has answered once the select has its option.
    await page.waitForFunction(() => (globalThis as any).document.querySelectorAll('#model option').length === 1)
    t.equal(await page.isHidden('#model-field'), true)
  })
}
