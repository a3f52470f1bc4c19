/**
 * Reloads while clients keep sending requests over HTTP: every request is answered 200 (it is
 * asserted that none fails, not how fast anything is).
 */
import t from 'tap'
import type { AddressInfo } from 'node:net'
import { adminReload, fakeRepo, form, rectImage, until, writeFakeModel } from '../helper.js'

// Several worker starts under load on a busy two-core machine; the assertion is about failures, not time.
t.setTimeout(300_000)

const img = await rectImage(32, 32, { x: 4, y: 4, w: 8, h: 8 })

t.test('reloads during traffic: zero failed requests', async (t) => {
  const { app, root } = await fakeRepo(t, (root) => writeFakeModel(root, 'alpha', '1'), { workers: 2, queueSize: 1000, requestTimeoutMs: 120_000 })
  await app.listen({ host: '127.0.0.1', port: 0 })
  const url = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}/segment`
  const RELOADS = 3
  const CLIENTS = 6
  const phase = { reloading: true }
  const outcomes: Array<{ status: number, model: string | null } | { error: string }> = []
  const clients = Array.from({ length: CLIENTS }, async (_, c) => {
    // Each client keeps sending until the last reload is over, and a few more after it.
    let after = 0
    while (phase.reloading || after++ < 3) {
      try {
        const res = await fetch(url, { method: 'POST', body: form({ image: img, expression: c % 2 === 0 ? 'the circle' : ['the circle', 'left one'] }) })
        await res.arrayBuffer()
        outcomes.push({ status: res.status, model: res.headers.get('x-model') })
      } catch (err) {
        outcomes.push({ error: (err as Error).message })
      }
    }
  })
  const results: any[] = []
  for (let v = 2; v <= RELOADS + 1; v++) {
    // Every reload starts with requests in flight.
    const before = outcomes.length
    await until(() => outcomes.length >= before + CLIENTS)
    writeFakeModel(root, 'alpha', String(v))
    results.push(...(await adminReload(app)).results)
  }
  phase.reloading = false
  await Promise.all(clients)
  t.strictSame(results.map((r) => [r.result, r.version]), Array.from({ length: RELOADS }, (_, i) => ['loaded', String(i + 2)]))
  const failed = outcomes.filter((o) => !('status' in o) || o.status !== 200)
  t.strictSame(failed, [], `zero failed requests out of ${outcomes.length}`)
  const served = new Set(outcomes.map((o) => 'model' in o ? o.model : ''))
  t.ok(served.has('alpha@1') && served.has(`alpha@${RELOADS + 1}`), `served by the first and the last version (${[...served].join(', ')})`)
  await until(() => app.models.list()[0].draining.length === 0)
  t.comment(`${outcomes.length} requests, ${RELOADS} reloads, versions served: ${[...served].sort().join(', ')}`)
})
