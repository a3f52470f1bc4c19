// The try-it page: pick an image, type a phrase, POST /segment, draw the mask and the queries.
// Plain ES module, no dependencies; everything comes from this origin.

const $ = (id) => document.getElementById(id)
const el = {
  form: $('segment-form'),
  file: $('file'),
  fileName: $('file-name'),
  examples: $('examples'),
  expression: $('expression'),
  datalist: $('suggestion-list'),
  suggestions: $('suggestions'),
  submit: $('submit'),
  threshold: $('threshold'),
  thresholdValue: $('threshold-value'),
  opacity: $('opacity'),
  opacityValue: $('opacity-value'),
  error: $('error'),
  status: $('status'),
  modelStatus: $('model-status'),
  model: $('model'),
  modelField: $('model-field'),
  stage: $('stage'),
  imageLayer: $('image-layer'),
  overlay: $('overlay'),
  outline: $('outline-layer'),
  boxLayer: $('box-layer'),
  summary: $('result-summary'),
  score: $('score'),
  area: $('area'),
  bbox: $('bbox'),
  imageSize: $('image-size'),
  timings: $('timings'),
  queryList: $('query-list'),
  modelFigures: $('model-figures'),
}

// The mask must stay visible on a shape of any colour: its fill alternates a light and a dark
// stripe (one of the two contrasts with whatever is underneath), and a light ring with a dark ring
// around it outlines it at full opacity.
const MASK_LIGHT = [255, 255, 255]
const MASK_DARK = [20, 0, 40]
const BOX_COLOUR = '#ffd400'

const state = {
  /** The image to send: a File, or a Blob for a bundled example. */
  image: null,
  imageName: 'image',
  /** The browser's decoding of it, when it can decode it (else the mask is drawn on grey). */
  bitmap: null,
  /** The expression of the last answered request (a threshold change re-asks for it). */
  lastExpression: '',
  controller: null,
  /** model.json of every served model version, by "name@version" (from GET /models). */
  metadata: new Map(),
  thresholdTimer: 0,
  renders: 0,
}

// ---------------------------------------------------------------------------------------------
// Model status

async function showModelStatus () {
  try {
    const res = await fetch('/readyz', { headers: { accept: 'application/json' } })
    const body = await res.json()
    const models = body.models ?? []
    el.modelStatus.replaceChildren(
      models.length > 1 ? `${models.length} models; default ` : 'Model ', strong(body.model), ' on ', strong(body.provider), ' — ',
      body.status === 'ready' ? 'ready' : `${body.status.replace('_', ' ')} (${body.workers.live}/${body.workers.configured} workers)`
    )
    if (body.status === 'starting') setTimeout(showModelStatus, 3000)
  } catch {
    el.modelStatus.textContent = 'Could not reach the service.'
    setTimeout(showModelStatus, 5000)
  }
}

/** The model picker: every model GET /models lists, the default one selected; hidden with only one. */
async function loadModels () {
  let list = { default: '', models: [] }
  try {
    const res = await fetch('/models', { headers: { accept: 'application/json' } })
    if (res.ok) list = await res.json()
  } catch { /* the page works with the default model */ }
  const serving = list.models.filter((m) => m.serving !== null)
  state.metadata = new Map(serving.map((m) => [`${m.name}@${m.serving.version}`, m.serving.metadata]))
  const previous = el.model.value
  el.model.replaceChildren(...serving.map((m) => {
    const o = document.createElement('option')
    o.value = m.name
    o.textContent = `${m.name} ${m.serving.version}${m.default ? ' (default)' : ''}${m.serving.state === 'ready' ? '' : ` — ${m.serving.state}`}`
    o.selected = previous !== '' ? m.name === previous : m.default
    return o
  }))
  el.modelField.hidden = serving.length < 2
}

function strong (text) {
  const s = document.createElement('strong')
  s.textContent = text
  return s
}

// ---------------------------------------------------------------------------------------------
// Examples and suggestions

async function loadExamples () {
  let list = []
  try {
    const res = await fetch('/examples/examples.json')
    if (res.ok) list = (await res.json()).examples ?? []
  } catch { /* the page works without them */ }
  el.examples.closest('fieldset').hidden = list.length === 0
  for (const ex of list) {
    const b = document.createElement('button')
    b.type = 'button'
    b.className = 'example'
    b.dataset.file = ex.file
    b.setAttribute('aria-pressed', 'false')
    b.title = ex.title
    const img = document.createElement('img')
    img.src = `/examples/${ex.file}`
    img.alt = ex.title
    img.width = 64
    img.height = 64
    b.append(img)
    b.addEventListener('click', () => chooseExample(ex, b))
    el.examples.append(b)
  }
}

async function chooseExample (ex, button) {
  try {
    const res = await fetch(`/examples/${ex.file}`)
    if (!res.ok) throw new Error(`HTTP ${res.status}`)
    await setImage(await res.blob(), ex.file)
  } catch (err) {
    showError({ message: `Could not load the example: ${err.message}` })
    return
  }
  for (const b of el.examples.querySelectorAll('.example')) b.setAttribute('aria-pressed', String(b === button))
  setSuggestions(ex.expressions ?? [])
  if (el.expression.value.trim() === '') el.expression.placeholder = ex.expressions?.[0] ?? el.expression.placeholder
  el.expression.focus()
}

function setSuggestions (expressions) {
  el.datalist.replaceChildren(...expressions.map((e) => Object.assign(document.createElement('option'), { value: e })))
  el.suggestions.replaceChildren(...expressions.map((e) => {
    const chip = document.createElement('button')
    chip.type = 'button'
    chip.className = 'chip'
    chip.textContent = e
    chip.addEventListener('click', () => { el.expression.value = e; void segment() })
    return chip
  }))
}

// ---------------------------------------------------------------------------------------------
// The image

async function setImage (blob, name) {
  state.image = blob
  state.imageName = name || 'image'
  state.lastExpression = ''
  el.fileName.textContent = name || 'image'
  clearResult()
  hideError()
  state.bitmap?.close?.()
  state.bitmap = null
  try {
    state.bitmap = await createImageBitmap(blob, { imageOrientation: 'from-image' })
  } catch { /* not something the browser can show (or not an image at all): the service will say */ }
  if (state.bitmap !== null) {
    drawImage(state.bitmap.width, state.bitmap.height)
    el.status.textContent = 'Now type a phrase and press Enter.'
  } else {
    el.stage.classList.add('empty')
    el.stage.classList.remove('has-image')
    el.status.textContent = 'This browser cannot preview the file; the service may still read it.'
  }
}

/** The image layer at width × height (the mask's size), drawn from the bitmap or grey. */
function drawImage (width, height) {
  const c = el.imageLayer
  c.width = width
  c.height = height
  const ctx = c.getContext('2d')
  if (state.bitmap !== null) ctx.drawImage(state.bitmap, 0, 0, width, height)
  else { ctx.fillStyle = '#444'; ctx.fillRect(0, 0, width, height) }
  el.stage.classList.remove('empty')
  el.stage.classList.add('has-image')
}

function clearResult () {
  for (const c of [el.overlay, el.outline, el.boxLayer]) c.getContext('2d').clearRect(0, 0, c.width, c.height)
  el.summary.hidden = true
  el.timings.hidden = true
  el.queryList.replaceChildren()
  el.stage.dataset.state = 'idle'
}

// ---------------------------------------------------------------------------------------------
// Segmenting

async function segment () {
  const expression = el.expression.value.trim() === '' ? '' : el.expression.value
  if (state.image === null) return showError({ message: 'Choose an image (or an example) first.' })
  if (expression === '') { el.expression.focus(); return showError({ message: 'Type a phrase that describes something in the image.' }) }

  state.controller?.abort()
  const controller = new AbortController()
  state.controller = controller
  const body = new FormData()
  body.append('image', state.image, state.imageName)
  body.append('expression', expression)
  body.append('threshold', el.threshold.value)
  if (!el.modelField.hidden && el.model.value !== '') body.append('model', el.model.value)

  hideError()
  el.status.textContent = 'Segmenting…'
  el.stage.dataset.state = 'loading'
  el.submit.disabled = true
  el.form.setAttribute('aria-busy', 'true')
  try {
    const res = await fetch('/segment', { method: 'POST', body, headers: { accept: 'application/json' }, signal: controller.signal })
    const json = await res.json().catch(() => null)
    if (controller !== state.controller) return
    if (!res.ok || json === null) {
      const error = json?.error ?? { message: `The service answered ${res.status} ${res.statusText}` }
      showError({ ...error, status: res.status, retryAfter: res.headers.get('retry-after') })
      el.status.textContent = ''
      el.stage.dataset.state = 'error'
      return
    }
    state.lastExpression = expression
    await render(json)
    el.status.textContent = `Done: “${expression}” at threshold ${el.threshold.value}.`
  } catch (err) {
    if (controller !== state.controller || err.name === 'AbortError') return
    showError({ message: `Could not reach the service (${err.message}).` })
    el.status.textContent = ''
    el.stage.dataset.state = 'error'
  } finally {
    if (controller === state.controller) {
      el.submit.disabled = false
      el.form.removeAttribute('aria-busy')
      state.controller = null
    }
  }
}

async function render (json) {
  const { width, height } = json.image
  const r = json.results[0]
  drawImage(width, height)
  await drawMask(r.mask.png, width, height)
  drawBox(r.bbox, width, height)

  el.score.textContent = r.score.toFixed(3)
  el.area.textContent = `${r.area.toLocaleString()} px (${(100 * r.area / (width * height)).toFixed(1)}%)`
  el.bbox.textContent = r.bbox === null ? 'empty mask' : `x ${r.bbox[0]}, y ${r.bbox[1]}, ${r.bbox[2]}×${r.bbox[3]}`
  el.imageSize.textContent = `${width}×${height}`
  el.summary.hidden = false

  const t = json.timings_ms
  const stages = ['decode', 'preprocess', 'queue', 'inference', 'postprocess'].filter((k) => typeof t[k] === 'number')
  el.timings.textContent = `${stages.map((k) => `${k} ${t[k].toFixed(1)}`).join(' · ')} · total ${t.total.toFixed(1)} ms — ${json.model.name}@${json.model.version} on ${json.model.provider}`
  el.timings.hidden = false

  renderQueries(r)
  renderModelFigures(json.model)
  state.renders += 1
  el.stage.dataset.renders = String(state.renders)
  el.stage.dataset.state = 'done'
}

/** The mask PNG (255 on the object, 0 elsewhere) as opaque stripes on a transparent layer, and its outline. */
async function drawMask (base64, width, height) {
  const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0))
  const bitmap = await createImageBitmap(new Blob([bytes], { type: 'image/png' }), { imageOrientation: 'none', premultiplyAlpha: 'none', colorSpaceConversion: 'none' })
  const c = el.overlay
  c.width = width
  c.height = height
  const ctx = c.getContext('2d', { willReadFrequently: true })
  ctx.imageSmoothingEnabled = false
  ctx.drawImage(bitmap, 0, 0, width, height)
  bitmap.close()
  const img = ctx.getImageData(0, 0, width, height)
  const d = img.data
  const mask = new Uint8Array(width * height)
  const stripe = Math.max(2, Math.round(Math.max(width, height) / 64))
  for (let i = 0, p = 0; i < d.length; i += 4, p++) {
    const on = d[i] >= 128
    mask[p] = on ? 1 : 0
    const x = p % width
    const y = (p - x) / width
    const rgb = Math.floor((x + y) / stripe) % 2 === 0 ? MASK_LIGHT : MASK_DARK
    d[i] = rgb[0]
    d[i + 1] = rgb[1]
    d[i + 2] = rgb[2]
    d[i + 3] = on ? 255 : 0
  }
  ctx.putImageData(img, 0, 0)
  drawOutline(mask, width, height)
}

/** Two rings just outside the mask, light then dark, each `ring` pixels wide. */
function drawOutline (mask, width, height) {
  const c = el.outline
  c.width = width
  c.height = height
  const ctx = c.getContext('2d')
  const ring = Math.max(1, Math.round(Math.max(width, height) / 256))
  const near = dilate(mask, width, height, ring)
  const far = dilate(mask, width, height, 2 * ring)
  const img = ctx.createImageData(width, height)
  const d = img.data
  for (let p = 0; p < mask.length; p++) {
    if (mask[p] === 1 || far[p] === 0) continue
    const rgb = near[p] === 1 ? MASK_LIGHT : MASK_DARK
    d[4 * p] = rgb[0]
    d[4 * p + 1] = rgb[1]
    d[4 * p + 2] = rgb[2]
    d[4 * p + 3] = 255
  }
  ctx.putImageData(img, 0, 0)
}

/** A 0/1 mask grown by r pixels in every direction (a square), in two running-window passes. */
function dilate (mask, width, height, r) {
  const rows = new Uint8Array(mask.length)
  for (let y = 0; y < height; y++) {
    const row = y * width
    let count = 0
    for (let x = 0; x < Math.min(r, width); x++) count += mask[row + x]
    for (let x = 0; x < width; x++) {
      if (x + r < width) count += mask[row + x + r]
      if (x - r - 1 >= 0) count -= mask[row + x - r - 1]
      rows[row + x] = count > 0 ? 1 : 0
    }
  }
  const out = new Uint8Array(mask.length)
  for (let x = 0; x < width; x++) {
    let count = 0
    for (let y = 0; y < Math.min(r, height); y++) count += rows[y * width + x]
    for (let y = 0; y < height; y++) {
      if (y + r < height) count += rows[(y + r) * width + x]
      if (y - r - 1 >= 0) count -= rows[(y - r - 1) * width + x]
      out[y * width + x] = count > 0 ? 1 : 0
    }
  }
  return out
}

function drawBox (bbox, width, height) {
  const c = el.boxLayer
  c.width = width
  c.height = height
  const ctx = c.getContext('2d')
  ctx.clearRect(0, 0, width, height)
  if (bbox === null) return
  const lw = Math.max(2, Math.round(Math.max(width, height) / 200))
  ctx.lineWidth = lw
  ctx.strokeStyle = BOX_COLOUR
  ctx.setLineDash([4 * lw, 2 * lw])
  ctx.strokeRect(bbox[0] + lw / 2, bbox[1] + lw / 2, Math.max(0, bbox[2] - lw), Math.max(0, bbox[3] - lw))
}

// ---------------------------------------------------------------------------------------------
// Queries: QBM confidence (bar, sorted) and attention over the words (heat strip)

/**
 * What the answering model's queries do on its validation set (model.json metrics.queries_val,
 * written by export/tools/query_stats.py), so one answer's bars and strips can be read against
 * the model's usual spread. Hidden when the model records no such figures.
 */
function renderModelFigures (model) {
  const meta = state.metadata.get(`${model.name}@${model.version}`)
  const q = meta?.metrics?.queries_val
  const val = meta?.metrics?.val?.overall
  if (q === undefined || typeof q.confidence_range !== 'number') {
    el.modelFigures.hidden = true
    return
  }
  const pct = (x) => `${(100 * x).toFixed(0)} %`
  el.modelFigures.textContent = `${model.name} ${model.version} on its validation set (${q.n} phrases)` +
    (typeof val?.mIoU === 'number' ? `: mIoU ${val.mIoU.toFixed(1)}` : '') +
    `; on average the ${meta.num_queries ?? ''} query weights span ${q.confidence_range.toFixed(3)} (max − min),` +
    ` the queries' word attentions differ by ${q.attention_tv.toFixed(3)} (mean total variation between pairs; 0 = identical, 1 = disjoint)` +
    ` and ${pct(q.top_word_agreement)} of query pairs attend most to the same word.`
  el.modelFigures.hidden = false
}

function renderQueries (r) {
  const order = r.queries.map((q, i) => ({ ...q, index: i })).sort((a, b) => b.confidence - a.confidence)
  const items = order.map((q) => {
    const li = document.createElement('li')
    li.className = 'query'
    li.dataset.query = String(q.index)
    const name = document.createElement('span')
    name.className = 'qname'
    name.textContent = `Q${q.index + 1}`

    const bar = document.createElement('div')
    bar.className = 'bar'
    bar.setAttribute('aria-hidden', 'true')
    const fill = document.createElement('span')
    // a sigmoid: (0, 1)
    fill.style.width = `${Math.max(0, Math.min(1, q.confidence)) * 100}%`
    bar.append(fill)
    const value = document.createElement('span')
    value.className = 'conf'
    value.textContent = q.confidence.toFixed(3)

    const strip = document.createElement('div')
    strip.className = 'strip'
    r.tokens.forEach((tok, k) => {
      // attention weights over the words sum to 1; the square root keeps spread-out attention visible
      const w = q.attention[k] ?? 0
      const v = Math.sqrt(Math.max(0, Math.min(1, w)))
      const s = document.createElement('span')
      s.className = 'tok' + (tok.known ? '' : ' unknown') + (v > 0.6 ? ' strong' : '')
      s.textContent = tok.text
      s.style.backgroundColor = heat(v)
      s.title = `${tok.text}: ${w.toFixed(3)}${tok.known ? '' : ' (not in the vocabulary)'}`
      strip.append(s)
    })
    const best = r.tokens.length > 0 ? r.tokens[q.attention.indexOf(Math.max(...q.attention))]?.text : undefined
    li.setAttribute('aria-label', `Query ${q.index + 1}: confidence ${q.confidence.toFixed(3)}${best !== undefined ? `; attends most to “${best}”` : ''}`)
    li.append(name, bar, value, strip)
    return li
  })
  el.queryList.replaceChildren(...items)
}

/** 0 → pale, 1 → deep orange-red. */
function heat (v) {
  const x = Math.max(0, Math.min(1, v))
  return `hsl(${Math.round(45 - 35 * x)} ${Math.round(70 + 25 * x)}% ${Math.round(93 - 48 * x)}%)`
}

// ---------------------------------------------------------------------------------------------
// Errors

function showError ({ message, code, status, retryAfter }) {
  el.error.replaceChildren()
  const p = document.createElement('span')
  p.className = 'error-message'
  p.textContent = message
  el.error.append(p)
  if (retryAfter) el.error.append(` Try again in ${retryAfter} s.`)
  if (code !== undefined || status !== undefined) {
    const c = document.createElement('code')
    c.textContent = [status, code].filter(Boolean).join(' ')
    el.error.append(' ', c)
  }
  el.error.hidden = false
}

function hideError () {
  el.error.hidden = true
  el.error.replaceChildren()
}

// ---------------------------------------------------------------------------------------------
// Wiring

el.form.addEventListener('submit', (e) => { e.preventDefault(); void segment() })
el.file.addEventListener('change', () => {
  const f = el.file.files?.[0]
  if (f === undefined) return
  for (const b of el.examples.querySelectorAll('.example')) b.setAttribute('aria-pressed', 'false')
  setSuggestions([])
  void setImage(f, f.name)
})
el.threshold.addEventListener('input', () => {
  el.thresholdValue.textContent = Number(el.threshold.value).toFixed(3)
  clearTimeout(state.thresholdTimer)
  if (state.lastExpression === '' || state.image === null) return
  state.thresholdTimer = setTimeout(() => {
    if (el.expression.value.trim() === '') el.expression.value = state.lastExpression
    void segment()
  }, 250)
})
el.opacity.addEventListener('input', () => {
  el.overlay.style.opacity = el.opacity.value
  el.opacityValue.textContent = `${Math.round(Number(el.opacity.value) * 100)}%`
})

// Dropping a file anywhere must not navigate away; dropping it on the picture uses it.
for (const type of ['dragover', 'drop']) window.addEventListener(type, (e) => e.preventDefault())
el.stage.addEventListener('dragenter', () => el.stage.classList.add('dragging'))
el.stage.addEventListener('dragleave', () => el.stage.classList.remove('dragging'))
el.stage.addEventListener('drop', (e) => {
  el.stage.classList.remove('dragging')
  const f = e.dataTransfer?.files?.[0]
  if (f !== undefined) {
    for (const b of el.examples.querySelectorAll('.example')) b.setAttribute('aria-pressed', 'false')
    setSuggestions([])
    void setImage(f, f.name)
  }
})

el.overlay.style.opacity = el.opacity.value
el.model.addEventListener('change', () => {
  clearResult()
  if (state.lastExpression !== '' && state.image !== null) {
    if (el.expression.value.trim() === '') el.expression.value = state.lastExpression
    void segment()
  }
})

void showModelStatus()
void loadModels()
void loadExamples()
