/** Checks real responses (and multipart request fields) against openapi.yaml. */
import { readFileSync } from 'node:fs'
import { Ajv2020 } from 'ajv/dist/2020.js'
import { parse } from 'yaml'
import type { LightMyRequestResponse } from 'fastify'

export const spec = parse(readFileSync(new URL('../openapi.yaml', import.meta.url), 'utf8')) as Record<string, any>

const ajv = new Ajv2020({ strict: false, allErrors: true, validateFormats: false })
ajv.addSchema(spec, 'openapi.json')

function deref (obj: any): any {
  if (obj?.$ref === undefined) return obj
  const parts = String(obj.$ref).replace(/^#\//, '').split('/')
  return deref(parts.reduce((o: any, k: string) => o[k], spec))
}

function pointer (...parts: string[]): string {
  return 'openapi.json#/' + parts.map((p) => p.replace(/~/g, '~0').replace(/\//g, '~1')).join('/')
}

/** Problems with one response; empty when it conforms. */
export function checkResponse (method: string, path: string, res: LightMyRequestResponse): string[] {
  const problems: string[] = []
  const op = spec.paths?.[path]?.[method.toLowerCase()]
  if (op === undefined) return [`${method} ${path} is not in openapi.yaml`]
  const status = String(res.statusCode)
  const declared = op.responses[status] ?? op.responses[`${status[0]}XX`] ?? op.responses.default
  if (declared === undefined) return [`${method} ${path} answered ${status}, which openapi.yaml does not list`]
  const response = deref(declared)
  const type = String(res.headers['content-type'] ?? '').split(';')[0].trim()
  const media = response.content?.[type]
  if (media === undefined) problems.push(`${method} ${path} ${status}: content type ${type} not in ${Object.keys(response.content ?? {}).join(', ')}`)
  for (const [name, h] of Object.entries<any>(response.headers ?? {})) {
    const header = deref(h)
    const value = res.headers[name.toLowerCase()]
    if (value === undefined) {
      if (header.required === true || name === 'Retry-After' || name === 'X-Request-Id') problems.push(`${method} ${path} ${status}: header ${name} missing`)
      continue
    }
    const v = ajv.compile(header.schema)
    if (!v(String(value))) problems.push(`${method} ${path} ${status}: header ${name}=${String(value)}: ${ajv.errorsText(v.errors)}`)
  }
  if (media !== undefined && type === 'application/json') {
    const schemaRef = response === declared
      ? pointer('paths', path, method.toLowerCase(), 'responses', status in op.responses ? status : 'default', 'content', type, 'schema')
      : pointer(...String(declared.$ref).replace(/^#\//, '').split('/'), 'content', type, 'schema')
    const validate = ajv.getSchema(schemaRef)
    if (validate === undefined) problems.push(`no schema at ${schemaRef}`)
    else if (!validate(res.json())) problems.push(`${method} ${path} ${status}: body ${ajv.errorsText(validate.errors)}`)
  }
  return problems
}

/** Problems with one example value against the schema beside it (a `$ref` or inline); empty when it conforms. */
export function checkExample (schema: any, value: unknown): string[] {
  const validate = schema.$ref !== undefined ? ajv.getSchema(pointer(...String(schema.$ref).replace(/^#\//, '').split('/'))) : ajv.compile(schema)
  if (validate === undefined) return [`no schema at ${String(schema.$ref)}`]
  return validate(value) ? [] : [ajv.errorsText(validate.errors)]
}

/** The multipart fields of a /segment request, checked against the request body schema. */
export function checkSegmentForm (fields: { image?: unknown, expression?: string | string[], threshold?: string, [k: string]: unknown }): string[] {
  const validate = ajv.getSchema('openapi.json#/components/schemas/SegmentForm')!
  const data: Record<string, unknown> = {}
  for (const [k, v] of Object.entries(fields)) if (v !== undefined) data[k] = k === 'image' ? '<binary>' : v
  return validate(data) ? [] : [ajv.errorsText(validate.errors)]
}
