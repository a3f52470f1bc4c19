import t from 'tap'
import { readFileSync } from 'node:fs'
import { createTokenizer, parseVocab, splitWords } from '../../src/model/tokenizer.js'

interface Fixture {
  vocab: string[]
  max_words: number
  cases: Array<{ name: string, text: string, words: string[], ids: number[] }>
}
// Written by the Python side (export/): the two tokenizers must agree on every case.
const fixture = JSON.parse(readFileSync(new URL('../fixtures/tokenizer_cases.json', import.meta.url), 'utf8')) as Fixture

t.test('shared fixture: words and ids agree with the Python tokenizer', async (t) => {
  const tok = createTokenizer(fixture.vocab, { maxWords: fixture.max_words })
  t.ok(fixture.cases.length > 0)
  for (const c of fixture.cases) {
    const r = tok.tokenize(c.text)
    t.strictSame(r.words, c.words, `${c.name}: words`)
    t.strictSame(r.ids, c.ids, `${c.name}: ids`)
    t.equal(r.ids.length, fixture.max_words)
  }
})

t.test('tokens carry text, id and known flag, truncated to L', async (t) => {
  const tok = createTokenizer(['<pad>', '<unk>', 'the', 'red', 'one'], { maxWords: 3 })
  const r = tok.tokenize('The RED blob, the one')
  t.strictSame(r.tokens, [
    { text: 'the', id: 2, known: true },
    { text: 'red', id: 3, known: true },
    { text: 'blob', id: 1, known: false },
  ])
  t.equal(r.truncated, 2)
  t.strictSame(r.ids, [2, 3, 1])
})

t.test('splitWords keeps letters, decimal digits and U+0027', async (t) => {
  t.strictSame(splitWords("it's 3 Ⅻ-shaped"), ["it's", '3', 'xii', 'shaped'])
})

t.test('parseVocab: line number = id, trailing newline ignored', async (t) => {
  t.strictSame(parseVocab('<pad>\n<unk>\nthe\n'), ['<pad>', '<unk>', 'the'])
  t.strictSame(parseVocab('<pad>\r\n<unk>\r\nthe'), ['<pad>', '<unk>', 'the'])
})
