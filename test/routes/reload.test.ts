/**
 * Reloading models (fake engines behind the real repository, registry, routes and worker threads):
 * a new version, a broken one (the old one keeps serving), a request held across the swap, removal
 * with drain, the admin key and MODELS_POLL_MS. Nothing here depends on timing: a request is held in its worker
 * by a gate the test opens.
 */
import t from 'tap'
import { rmSync } from 'node:fs'
import path from 'node:path'
import { ADMIN_KEY, adminReload, fakeRepo, modelsOf, segmentModel as segment, until, writeFakeModel } from '../helper.js'

// Each test starts worker threads for several model versions; on a loaded two-core machine that
// outlasts the suite's 120 s file default. Nothing asserts time.
t.setTimeout(300_000)

t.test('reload: a new version serves after it started; a broken one is rejected and the old one keeps serving', async (t) => {
  const { app, root } = await fakeRepo(t, (root) => writeFakeModel(root, 'alpha', '1.0.0'))
  t.strictSame((await adminReload(app)).results, [{ model: 'alpha', version: '1.0.0', result: 'unchanged' }], 'nothing changed')

  writeFakeModel(root, 'alpha', '1.1.0')
  const ok = await adminReload(app)
  t.strictSame(ok.results, [{ model: 'alpha', version: '1.1.0', result: 'loaded', previous: '1.0.0' }])
  t.equal((await segment(app)).headers['x-model'], 'alpha@1.1.0')
  await until(() => app.models.list()[0].draining.length === 0)

  // A version whose workers fail to start (as a failed golden case does): rejected.
  writeFakeModel(root, 'alpha', '1.2.0', { fakeWorker: { failStart: true } })
  const broken = await adminReload(app)
  t.match(broken.results, [{ model: 'alpha', version: '1.2.0', result: 'rejected', previous: '1.1.0', reason: /fake start failure/ }])
  t.equal((await segment(app)).headers['x-model'], 'alpha@1.1.0', 'the previous version keeps serving')
  t.match((await modelsOf(app)).models[0], { serving: { version: '1.1.0', state: 'ready' }, last_rejected: { version: '1.2.0', reason: /fake start failure/ } })

  // A folder that is not a valid version: rejected before anything is loaded.
  writeFakeModel(root, 'alpha', '1.3.0', { json: { version: '9' } })
  t.match((await adminReload(app)).results, [{ model: 'alpha', version: '1.3.0', result: 'rejected', previous: '1.1.0', reason: /says version "9"/ }])
  t.equal((await segment(app)).headers['x-model'], 'alpha@1.1.0')

  const metrics = (await app.inject('/metrics')).payload
  t.match(metrics, 'vlt_model_reloads_total{model="alpha",version="1.1.0",result="loaded"} 1')
  t.match(metrics, 'vlt_model_reloads_total{model="alpha",version="1.2.0",result="rejected"} 1')
  t.match(metrics, 'vlt_model_requests_total{model="alpha",version="1.1.0",status_code="200"} 3')
  t.equal(app.models.isReady(), true)
})

t.test('a request accepted before the swap finishes on the version that accepted it; then that version closes', async (t) => {
  const { app, root, open } = await fakeRepo(t, (root) => writeFakeModel(root, 'alpha', '1'))
  const v1 = app.models.get('alpha')!
  const held = segment(app, undefined, 'hold the circle')
  await until(() => v1.stats().busyWorkers === 1)
  writeFakeModel(root, 'alpha', '2')
  t.match((await adminReload(app)).results, [{ result: 'loaded', version: '2', previous: '1' }])
  t.equal((await segment(app)).headers['x-model'], 'alpha@2', 'new requests go to the new version')
  const during = (await modelsOf(app)).models[0]
  t.match(during, { serving: { version: '2', state: 'ready' }, draining: [{ version: '1', state: 'draining', inflight: 1 }] })
  t.equal(v1.isReady(), true, 'the old workers are still up while a request holds them')
  open()
  const res = await held
  t.equal(res.statusCode, 200)
  t.equal(res.headers['x-model'], 'alpha@1')
  await until(() => app.models.list()[0].draining.length === 0)
  t.equal(v1.isReady(), false, 'the old version closed after its last request')
  t.equal(v1.stats().liveWorkers, 0)
})

t.test('removing a model: new requests get 404 at once, the one in flight finishes, then it closes', async (t) => {
  const { app, root, open } = await fakeRepo(t, (root) => {
    writeFakeModel(root, 'alpha', '1')
    writeFakeModel(root, 'beta', '1')
  })
  const beta = app.models.get('beta')!
  const held = segment(app, 'beta', 'hold the circle')
  await until(() => beta.stats().busyWorkers === 1)
  rmSync(path.join(root, 'beta'), { recursive: true })
  t.strictSame((await adminReload(app)).results, [{ model: 'alpha', version: '1', result: 'unchanged' }, { model: 'beta', version: '1', result: 'removed' }])
  t.equal((await segment(app, 'beta')).statusCode, 404)
  t.match((await modelsOf(app)).models, [{ name: 'alpha' }, { name: 'beta', serving: null, draining: [{ version: '1', inflight: 1 }] }])
  open()
  const res = await held
  t.equal(res.statusCode, 200)
  t.equal(res.headers['x-model'], 'beta@1')
  await until(() => app.models.list().length === 1)
  t.equal(beta.isReady(), false)
  t.strictSame((await modelsOf(app)).models.map((m: any) => m.name), ['alpha'])
})

t.test('POST /admin/reload needs an admin key; API keys do not open it', async (t) => {
  const { app } = await fakeRepo(t, (root) => writeFakeModel(root, 'alpha', '1'), { apiKeys: ['user-key'] })
  for (const [headers, why] of [[{}, 'no key'], [{ authorization: 'Bearer user-key' }, 'an API key'], [{ authorization: 'Bearer wrong' }, 'a wrong key']] as const) {
    const res = await app.inject({ method: 'POST', url: '/admin/reload', headers })
    t.equal(res.statusCode, 401, why)
    t.equal(res.json().error.code, 'SEG_ERR_UNAUTHORIZED')
  }
  t.equal((await app.inject({ method: 'POST', url: '/admin/reload', headers: { authorization: `Bearer ${ADMIN_KEY}` } })).statusCode, 200)

  const off = await fakeRepo(t, (root) => writeFakeModel(root, 'alpha', '1'), { adminApiKeys: [] })
  const res = await off.app.inject({ method: 'POST', url: '/admin/reload', headers: { authorization: `Bearer ${ADMIN_KEY}` } })
  t.equal(res.statusCode, 401)
  t.match(res.json().error.message, /Admin routes are off: set ADMIN_API_KEYS/)
})

t.test('MODELS_POLL_MS: a rescan rolls a new version in; a rejected one is not retried until it changes', async (t) => {
  const { app, root } = await fakeRepo(t, (root) => writeFakeModel(root, 'alpha', '1'), { modelsPollMs: 50 })
  writeFakeModel(root, 'alpha', '2')
  await until(() => app.models.get('alpha')?.info.version === '2')
  t.equal((await segment(app)).headers['x-model'], 'alpha@2')

  writeFakeModel(root, 'alpha', '3', { fakeWorker: { failStart: true } })
  await until(() => app.models.list()[0].lastRejected?.version === '3')
  const first = app.models.list()[0].lastRejected!.at
  // Several more rescans pass; the same broken folder is not loaded again.
  const metric = async () => (await app.inject('/metrics')).payload.match(/vlt_model_reloads_total\{model="alpha",version="3",result="rejected"\} (\d+)/)?.[1]
  const before = await metric()
  await afterAnotherRescan()
  t.equal(await metric(), before, 'polls did not retry it')
  t.equal(app.models.list()[0].lastRejected!.at, first)
  t.equal((await segment(app)).headers['x-model'], 'alpha@2', 'the previous version keeps serving')

  /** Until a later rescan finished: one that also found a new, unrelated model (it scans alpha first). */
  async function afterAnotherRescan (): Promise<void> {
    writeFakeModel(root, 'beta', '1')
    await until(() => app.models.get('beta')?.isReady() === true)
  }
})
