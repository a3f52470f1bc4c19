/**
 * The memory budget as a named plugin: decorates `app.budget` (src/budget/budget.ts) from the
 * memory the service may use (src/budget/memory-limit.ts) and MEMORY_RESERVE_MB. When the reserve
 * is to be measured, the models plugin (models.ts) sets it once the models found at start are ready.
 */
import fp from 'fastify-plugin'
import type { FastifyInstance } from 'fastify'
import { type Budget, createBudget } from '../budget/budget.js'
import { type LimitProbe, memoryLimit } from '../budget/memory-limit.js'

declare module 'fastify' {
  interface FastifyInstance {
    budget: Budget
  }
}

export interface BudgetPluginOptions {
  /** Tests: where the cgroup files and the physical memory are read from. */
  probe?: LimitProbe
}

export default fp(async (app: FastifyInstance, opts: BudgetPluginOptions) => {
  const { config } = app
  const limit = memoryLimit(config.memoryBudgetMb, opts.probe)
  const reserveBytes = config.memoryReserveMb > 0 ? Math.round(config.memoryReserveMb * 1024 * 1024) : undefined
  app.decorate('budget', createBudget({ limit, queueSize: config.queueSize, reserveBytes }))
}, { name: 'budget' })
