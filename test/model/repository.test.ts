/** Scanning a model repository: layouts, version order, and the folders it refuses (and why). */
import t from 'tap'
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { compareVersions, folderFingerprint, folderSource, repositorySource, type Candidate } from '../../src/model/repository.js'
import type { Segmenter } from '../../src/model/segmenter.js'
import { writeFakeModel } from '../helper.js'

const never = async (): Promise<Segmenter> => { throw new Error('not loaded in this test') }

t.test('compareVersions: numeric pieces compare as numbers', async (t) => {
  const sorted = ['1.10.0', '1.9.2', '2', '1.2.0', '10', '1.2.0-rc1', '1.2'].sort(compareVersions)
  t.strictSame(sorted, ['1.2', '1.2.0', '1.2.0-rc1', '1.9.2', '1.10.0', '2', '10'])
  t.equal(compareVersions('3', '3'), 0)
})

t.test('repositorySource: versioned and flat folders, the highest version, refused folders', async (t) => {
  const root = mkdtempSync(path.join(os.tmpdir(), 'vlt-repo-'))
  writeFakeModel(root, 'alpha', '1.9.0')
  writeFakeModel(root, 'alpha', '1.10.0')
  writeFakeModel(root, 'alpha', '1.2.0')
  mkdirSync(path.join(root, 'alpha', 'notes'))  // a folder without model.json is not a version
  writeFakeModel(root, 'beta', '0.3.0', { flat: true })
  writeFakeModel(root, '.hidden', '1')
  writeFileSync(path.join(root, 'README.md'), 'not a model')
  writeFakeModel(root, 'gamma', '2.0.0', { json: { name: 'other-name' } })
  writeFakeModel(root, 'delta', '1.0.0', { json: { version: '1.0.1' } })
  mkdirSync(path.join(root, 'empty'))
  mkdirSync(path.join(root, 'bad name'))
  mkdirSync(path.join(root, 'broken'))
  writeFileSync(path.join(root, 'broken', 'model.json'), '{ not json')

  const { candidates, problems } = await repositorySource(root, never).scan()
  t.strictSame(candidates.map((c: Candidate) => [c.name, c.version, path.relative(root, c.dir!)]), [
    ['alpha', '1.10.0', path.join('alpha', '1.10.0')],
    ['beta', '0.3.0', 'beta'],
  ])
  const why = Object.fromEntries(problems.map((p) => [p.name, p.reason]))
  t.strictSame(Object.keys(why).sort(), ['bad name', 'broken', 'delta', 'empty', 'gamma'])
  t.match(why.gamma, /names the model "other-name", its folder is "gamma"/)
  t.match(why.delta, /says version "1.0.1", its folder is delta\/1.0.0\//)
  t.match(why.empty, /no model.json in empty\/ nor in a version folder/)
  t.match(why['bad name'], /not a model name/)
  t.match(why.broken, /not readable JSON/)
})

t.test('the fingerprint changes with any file of the version folder', async (t) => {
  const root = mkdtempSync(path.join(os.tmpdir(), 'vlt-repo-'))
  const dir = writeFakeModel(root, 'alpha', '1')
  const a = await folderFingerprint(dir)
  t.equal(await folderFingerprint(dir), a, 'stable')
  writeFileSync(path.join(dir, 'golden.json'), '{}')
  const b = await folderFingerprint(dir)
  t.not(b, a, 'a new file')
  writeFileSync(path.join(dir, 'golden.json'), '{"changed": true}')
  t.not(await folderFingerprint(dir), b, 'a changed file')
})

t.test('folderSource (MODEL_PATH): one model, named by its model.json', async (t) => {
  const root = mkdtempSync(path.join(os.tmpdir(), 'vlt-repo-'))
  const dir = writeFakeModel(root, 'solo', '4.0.0', { flat: true })
  const { candidates, problems } = await folderSource(dir, never).scan()
  t.strictSame(problems, [])
  t.strictSame(candidates.map((c) => [c.name, c.version]), [['solo', '4.0.0']])
})

t.test('repositorySource: an unreadable MODELS_DIR is an error that names it', async (t) => {
  await t.rejects(repositorySource('/nonexistent/models', never).scan(), /MODELS_DIR \/nonexistent\/models cannot be read/)
})
