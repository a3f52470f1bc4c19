// ESLint: neostandard (JavaScript Standard Style, for TypeScript and JavaScript), with the rules
// that this code base's existing style deliberately differs from turned off. `npm run lint` runs
// it (and ruff for export/).
import neostandard from 'neostandard'

export default [
  ...neostandard({
    ts: true,
    // src/client/openapi-types.ts is generated from openapi.yaml (npm run gen:client).
    ignores: ['dist/**', 'node_modules/**', 'test/e2e/output/**', 'runs/**', 'src/client/openapi-types.ts'],
  }),
  {
    rules: {
      // `void promiseOrReply` marks a value that is deliberately not awaited (reply.header() and
      // friends return the reply, a thenable).
      'no-void': 'off',
      // Long option objects (environments in tests, log fields) are packed several per line.
      '@stylistic/object-property-newline': 'off',
    },
  },
  {
    // prom-client registers a metric when it is constructed; the object is not needed after.
    files: ['src/plugins/metrics.ts'],
    rules: { 'no-new': 'off' },
  },
  {
    // Dockerfile text: ${NODE_IMAGE} is Docker's syntax, not a missed template literal.
    files: ['test/docker/**'],
    rules: { 'no-template-curly-in-string': 'off' },
  },
  {
    // the try-it page runs in the browser
    files: ['src/public/**/*.js'],
    languageOptions: { globals: { createImageBitmap: 'readonly' } },
  },
]
