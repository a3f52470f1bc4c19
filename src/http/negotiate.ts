/** Accept-header negotiation between the two representations of a segmentation. */

export type Representation = 'json' | 'png'

const MEDIA: Record<Representation, string> = { json: 'application/json', png: 'image/png' }

interface Range { type: string, subtype: string, q: number }

function parseAccept (header: string): Range[] {
  return header.split(',').map((part) => {
    const [range, ...params] = part.trim().split(';')
    const [type = '', subtype = ''] = range.trim().toLowerCase().split('/')
    let q = 1
    for (const p of params) {
      const [k, v] = p.trim().split('=')
      if (k?.trim().toLowerCase() === 'q') q = Number(v)
    }
    return { type, subtype, q: Number.isFinite(q) ? q : 0 }
  }).filter((r) => r.type !== '')
}

/** q of a media type under the most specific matching range (−1: no range matches). */
function quality (ranges: Range[], media: string): number {
  const [type, subtype] = media.split('/')
  let best = -1
  let specificity = -1
  for (const r of ranges) {
    const s = r.type === type && r.subtype === subtype ? 2 : r.type === type && r.subtype === '*' ? 1 : r.type === '*' && r.subtype === '*' ? 0 : -1
    if (s > specificity) { specificity = s; best = r.q }
  }
  return specificity < 0 ? -1 : best
}

/**
 * The representations the client accepts, best first (JSON wins ties). A missing or empty Accept
 * accepts JSON only.
 */
export function acceptable (header: string | undefined): Representation[] {
  if (header === undefined || header.trim() === '') return ['json']
  const ranges = parseAccept(header)
  return (['json', 'png'] as const)
    .map((rep) => ({ rep, q: quality(ranges, MEDIA[rep]) }))
    .filter((x) => x.q > 0)
    .sort((a, b) => b.q - a.q)
    .map((x) => x.rep)
}

export const mediaType = (rep: Representation): string => MEDIA[rep]
