/** PNG tEXt chunks (keyword → text, Latin-1): read them, or add one after IHDR. */
import { crc32 } from 'node:zlib'

const SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a])

interface Chunk { type: string, data: Buffer, start: number, end: number }

function chunks (png: Buffer): Chunk[] {
  if (!png.subarray(0, 8).equals(SIGNATURE)) throw new Error('not a PNG')
  const out: Chunk[] = []
  for (let at = 8; at + 12 <= png.length;) {
    const length = png.readUInt32BE(at)
    const type = png.toString('latin1', at + 4, at + 8)
    out.push({ type, data: png.subarray(at + 8, at + 8 + length), start: at, end: at + 12 + length })
    at += 12 + length
    if (type === 'IEND') break
  }
  return out
}

export function readPngText (png: Buffer): Record<string, string> {
  const text: Record<string, string> = {}
  for (const c of chunks(png).filter((c) => c.type === 'tEXt')) {
    const nul = c.data.indexOf(0)
    text[c.data.toString('latin1', 0, nul)] = c.data.toString('latin1', nul + 1)
  }
  return text
}

export function withPngText (png: Buffer, entries: Record<string, string>): Buffer {
  const all = chunks(png)
  const ihdr = all[0]
  if (ihdr?.type !== 'IHDR') throw new Error('PNG without IHDR first')
  const added = Object.entries(entries).map(([key, value]) => {
    const data = Buffer.concat([Buffer.from(key, 'latin1'), Buffer.from([0]), Buffer.from(value, 'latin1')])
    const head = Buffer.alloc(8)
    head.writeUInt32BE(data.length, 0)
    head.write('tEXt', 4, 'latin1')
    const crc = Buffer.alloc(4)
    crc.writeUInt32BE(crc32(Buffer.concat([head.subarray(4), data])) >>> 0, 0)
    return Buffer.concat([head, data, crc])
  })
  // drop earlier chunks with the same keywords, keep everything else in order
  const kept = all.slice(1).filter((c) => !(c.type === 'tEXt' && c.data.indexOf(0) >= 0 && c.data.toString('latin1', 0, c.data.indexOf(0)) in entries))
  return Buffer.concat([png.subarray(0, ihdr.end), ...added, ...kept.map((c) => png.subarray(c.start, c.end))])
}
