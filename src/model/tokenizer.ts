/**
 * The shared tokenizer rules (docs/vlt.md §3), mirrored line for line by the export's Python
 * tokenizer and pinned by test/fixtures/tokenizer_cases.json:
 *
 *   1. Unicode NFKC                      — unicodedata.normalize('NFKC', text)
 *   2. lower-case                        — str.lower()
 *   3. every character that is not a letter (\p{L}), a decimal digit (\p{Nd}) or the
 *      apostrophe U+0027 becomes a space
 *   4. split on whitespace               — str.split()
 *   5. map to ids via vocab.txt (line number = id), unknown → unk_id
 *   6. truncate, or right-pad with pad_id, to max_words (L)
 */

/** Ids the vocabulary reserves unless model.json says otherwise: line 0 pads, line 1 is the unknown word. */
export const PAD_ID = 0
export const UNK_ID = 1

/** Step 3: the characters that survive; everything else becomes a space. */
const NOT_KEPT = /[^\p{L}\p{Nd}']/gu

export interface Token {
  text: string
  id: number
  known: boolean
}

export interface Tokenized {
  /** The words after the rules, before truncation. */
  words: string[]
  /** The words fed to the model (the first L), with their ids. */
  tokens: Token[]
  /** Exactly L ids, right-padded with pad_id. */
  ids: number[]
  /** Words beyond L that were dropped. */
  truncated: number
}

export interface VocabularyOptions {
  maxWords: number
  padId?: number
  unkId?: number
}

/** Steps 1–4. */
export function splitWords (text: string): string[] {
  return text
    .normalize('NFKC')
    .toLowerCase()
    .replace(NOT_KEPT, ' ')
    .split(' ')
    .filter((w) => w !== '')
}

export interface Tokenizer {
  readonly maxWords: number
  readonly padId: number
  readonly unkId: number
  readonly size: number
  tokenize: (text: string) => Tokenized
}

/** Build a tokenizer over the vocabulary (index = id). */
export function createTokenizer (vocab: readonly string[], opts: VocabularyOptions): Tokenizer {
  const padId = opts.padId ?? PAD_ID
  const unkId = opts.unkId ?? UNK_ID
  const maxWords = opts.maxWords
  if (!Number.isInteger(maxWords) || maxWords < 1) throw new Error(`max_words must be a positive integer, got ${maxWords}`)
  const index = new Map<string, number>()
  vocab.forEach((word, id) => {
    if (id === padId || id === unkId) return
    if (!index.has(word)) index.set(word, id)
  })

  function tokenize (text: string): Tokenized {
    const words = splitWords(text)
    const kept = words.slice(0, maxWords)
    const tokens = kept.map((w) => {
      const id = index.get(w)
      return id === undefined ? { text: w, id: unkId, known: false } : { text: w, id, known: true }
    })
    const ids = tokens.map((t) => t.id)
    while (ids.length < maxWords) ids.push(padId)
    return { words, tokens, ids, truncated: words.length - kept.length }
  }

  return { maxWords, padId, unkId, size: vocab.length, tokenize }
}

/** Parse vocab.txt: one word per line, the line number is the id (a trailing newline is not a word). */
export function parseVocab (text: string): string[] {
  const lines = text.split('\n').map((l) => l.replace(/\r$/, ''))
  if (lines.length > 0 && lines[lines.length - 1] === '') lines.pop()
  return lines
}
