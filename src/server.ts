/**
 * The process entry point: the only file that reads the environment, listens and handles
 * signals. SIGTERM/SIGINT turn /readyz to 503 at once, keep listening SHUTDOWN_DELAY_MS (new
 * /segment requests get 503), then stop accepting connections, let accepted requests finish (up
 * to SHUTDOWN_GRACE_MS) and exit 0. SIGHUP rescans the models and rolls in what changed
 * (src/model/repository.ts), like POST /admin/reload.
 */
import closeWithGrace from 'close-with-grace'
import { buildApp } from './app.js'
import { ConfigError, loadConfig, type Config } from './config.js'

async function main (): Promise<void> {
  let config: Config
  try {
    config = loadConfig(process.env)
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`configuration error: ${err.message}\n`)
      process.exit(2)
    }
    throw err
  }

  const app = buildApp(config, {
    logger: {
      level: config.logLevel,
      redact: ['req.headers.authorization', 'req.headers.cookie', 'req.headers["x-api-key"]'],
    },
  })

  // close-with-grace treats SIGHUP as a shutdown signal; here it means "reload the models".
  const hupBefore = process.listeners('SIGHUP')
  closeWithGrace({ delay: config.shutdownDelayMs + config.shutdownGraceMs, logger: app.log }, async ({ signal, err }) => {
    // From here on /readyz answers 503 and new /segment requests 503 (SEG_ERR_SHUTTING_DOWN).
    app.lifecycle.closing = true
    if (err !== undefined) app.log.error({ err }, 'shutting down after an error')
    else app.log.info({ signal }, 'shutting down')
    // Keep listening a little so load balancers see the 503 before connections are refused.
    if (signal !== undefined && config.shutdownDelayMs > 0) await new Promise((resolve) => setTimeout(resolve, config.shutdownDelayMs))
    await app.close()
  })
  for (const l of process.listeners('SIGHUP')) if (!hupBefore.includes(l)) process.removeListener('SIGHUP', l)
  process.on('SIGHUP', () => {
    // Before the models plugin ran there is nothing to reload; the start itself reads the folders.
    if (!app.hasDecorator('models')) return
    app.log.info({ signal: 'SIGHUP' }, 'reloading the models')
    app.models.reload('signal').catch((err) => app.log.error({ reason: (err as Error).message }, 'model reload failed'))
  })

  try {
    await app.listen({ host: config.host, port: config.port })
  } catch (err) {
    app.log.fatal({ err: { message: (err as Error).message } }, 'could not start')
    process.exit(1)
  }
  app.log.info({
    models: app.models.list().map((m) => `${m.name}@${m.serving?.version ?? '?'}`),
    defaultModel: app.models.defaultName(),
    source: app.models.source,
    workers: config.workers,
    threadsPerWorker: config.threadsPerWorker,
    intraOpSpinning: config.intraOpSpinning,
    executionProviders: config.executionProviders,
  }, 'listening; loading the models in the workers')

  try {
    await app.models.started
    app.log.info({ providers: Object.fromEntries(app.models.list().map((m) => [m.name, m.serving?.segmenter.provider()])) }, 'ready')
    const b = app.budget.stats()
    const mib = (bytes: number): number => Math.round(bytes / 1024 / 1024)
    app.log.info({
      limitMb: mib(b.limitBytes),
      limitSource: b.limitSource,
      reserveMb: mib(b.reserveBytes),
      reserveSource: config.memoryReserveMb > 0 ? 'MEMORY_RESERVE_MB' : 'measured',
      requestBudgetMb: mib(b.capacityBytes),
    }, 'memory budget')
    if (b.capacityBytes === 0) app.log.warn({ limitMb: mib(b.limitBytes), reserveMb: mib(b.reserveBytes) }, 'the memory budget leaves nothing for requests: every /segment request will be refused')
  } catch (err) {
    app.log.fatal({ reason: (err as Error).message }, 'a model could not be started')
    await app.close().catch(() => {})
    process.exit(1)
  }
}

void main()
