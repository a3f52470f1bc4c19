/** JSON schemas of the response bodies (kept in step with openapi.yaml by test/openapi.test.ts). */

export const errorBody = {
  type: 'object',
  required: ['error'],
  properties: {
    error: {
      type: 'object',
      required: ['code', 'message'],
      properties: {
        code: { type: 'string' },
        message: { type: 'string' },
        details: { type: 'object', additionalProperties: true },
      },
    },
  },
} as const

export const segmentResponse = {
  type: 'object',
  required: ['model', 'image', 'results', 'timings_ms'],
  properties: {
    model: {
      type: 'object',
      required: ['name', 'version', 'provider'],
      properties: { name: { type: 'string' }, version: { type: 'string' }, provider: { type: 'string' } },
    },
    image: {
      type: 'object',
      required: ['width', 'height'],
      properties: { width: { type: 'integer' }, height: { type: 'integer' } },
    },
    format: { type: 'string' },
    results: {
      type: 'array',
      items: {
        type: 'object',
        required: ['expression', 'tokens', 'mask', 'score', 'bbox', 'area', 'queries'],
        properties: {
          expression: { type: 'string' },
          tokens: {
            type: 'array',
            items: {
              type: 'object',
              required: ['text', 'id', 'known'],
              properties: { text: { type: 'string' }, id: { type: 'integer' }, known: { type: 'boolean' } },
            },
          },
          // Exactly one of png, coco_rle, polygon (the request's format); openapi.yaml states the oneOf.
          mask: {
            type: 'object',
            properties: {
              png: { type: 'string' },
              coco_rle: {
                type: 'object',
                required: ['size', 'counts'],
                properties: { size: { type: 'array', items: { type: 'integer' } }, counts: { type: 'string' } },
              },
              polygon: {
                type: 'array',
                items: {
                  type: 'object',
                  required: ['outer', 'holes'],
                  properties: {
                    outer: { type: 'array', items: { type: 'integer' } },
                    holes: { type: 'array', items: { type: 'array', items: { type: 'integer' } } },
                  },
                },
              },
            },
          },
          score: { type: 'number' },
          bbox: { anyOf: [{ type: 'array', items: { type: 'integer' }, minItems: 4, maxItems: 4 }, { type: 'null' }] },
          bbox_format: { type: 'string' },
          area: { type: 'integer' },
          queries: {
            type: 'array',
            items: {
              type: 'object',
              required: ['confidence', 'attention'],
              properties: { confidence: { type: 'number' }, attention: { type: 'array', items: { type: 'number' } } },
            },
          },
        },
      },
    },
    timings_ms: {
      type: 'object',
      required: ['decode', 'preprocess', 'inference', 'postprocess', 'total'],
      properties: {
        decode: { type: 'number' },
        preprocess: { type: 'number' },
        queue: { type: 'number' },
        inference: { type: 'number' },
        postprocess: { type: 'number' },
        total: { type: 'number' },
      },
    },
  },
} as const
