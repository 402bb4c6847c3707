#!/usr/bin/env node
// Interop client: an UNMODIFIED npm Yjs + y-websocket client, driven from the
// command line (and optionally stdin) so that Python tests can prove that a
// stock Yjs client talks to our /yjs/{document_id} WebSocket endpoint.
//
//   node yclient.mjs --url ws://127.0.0.1:PORT/yjs --doc DOC_ID --token TOKEN \
//        [--timeout-ms 15000] [--roots text:content,map:shapes] [--stdin-ops] \
//        [actions...]
//
// Every action prints zero or more result lines followed by {"ok": "<action>"}.
// On failure it prints {"error": "...", "action": "..."} and exits non-zero
// (1 = action failed or timed out, 2 = bad usage). See README.md.

import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import WebSocket from 'ws'
import readline from 'node:readline'

const EXIT_FAIL = 1
const EXIT_USAGE = 2

// ---------------------------------------------------------------- output ---

const emit = (obj) => {
  process.stdout.write(JSON.stringify(obj) + '\n')
}

const log = (...args) => {
  process.stderr.write('[yclient] ' + args.join(' ') + '\n')
}

class ActionError extends Error {
  constructor (message, extra = {}) {
    super(message)
    this.extra = extra
  }
}

// The provider reports "permission denied" auth messages only through
// console.warn (see permissionDeniedHandler in y-websocket). We leave the
// provider's handlers untouched and observe console.warn instead.
const PERMISSION_DENIED_PREFIX = 'Permission denied to access '
const permissionDenials = [] // reasons, in arrival order
let permissionDenialsConsumed = 0
const notifiers = new Set() // callbacks re-checking pending waits

const notifyAll = () => {
  for (const fn of Array.from(notifiers)) fn()
}

const originalWarn = console.warn.bind(console)
console.warn = (...args) => {
  const first = args[0]
  if (typeof first === 'string' && first.startsWith(PERMISSION_DENIED_PREFIX)) {
    const nl = first.indexOf('\n')
    permissionDenials.push(nl === -1 ? '' : first.slice(nl + 1))
    notifyAll()
  }
  originalWarn(...args) // console.warn writes to stderr; stdout stays pure JSON
}
// Anything else the libraries log on stdout would corrupt our JSON stream.
console.log = (...args) => process.stderr.write(args.map(String).join(' ') + '\n')
console.info = console.log

// ----------------------------------------------------------------- usage ---

const USAGE = `usage: node yclient.mjs --url WS_URL --doc DOC_ID [--token TOKEN]
        [--timeout-ms N] [--roots KIND:NAME,...] [--stdin-ops] [ACTION ...]
actions:
  wait-synced | wait-echo | print | quit | expect-permission-denied
  insert-text:ROOT:INDEX:TEXT        delete-text:ROOT:INDEX:LENGTH
  set-map:ROOT:KEY:JSON              wait-map:ROOT:KEY:JSON
  wait-text:ROOT:EXPECTED            set-awareness:JSON
  wait-awareness-count:N             expect-close:CODE_MIN:CODE_MAX
  set-token:TOKEN                    wait-reconnected
  wait-stopped                       sleep-ms:N
kinds for --roots: text, map, array, xml`

const usageError = (message) => {
  emit({ error: message, usage: USAGE })
  process.exit(EXIT_USAGE)
}

const parseArgs = (argv) => {
  const opts = {
    url: null,
    doc: null,
    token: null,
    timeoutMs: 15000,
    roots: [],
    stdinOps: false,
    actions: []
  }
  const valueFlags = new Set(['--url', '--doc', '--token', '--timeout-ms', '--roots'])
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]
    if (arg === '--help' || arg === '-h') {
      process.stdout.write(USAGE + '\n')
      process.exit(0)
    }
    if (arg === '--stdin-ops') {
      opts.stdinOps = true
      continue
    }
    let flag = arg
    let value = null
    if (arg.startsWith('--')) {
      const eq = arg.indexOf('=')
      if (eq !== -1) {
        flag = arg.slice(0, eq)
        value = arg.slice(eq + 1)
      }
      if (!valueFlags.has(flag)) usageError(`unknown option ${flag}`)
      if (value === null) {
        if (i + 1 >= argv.length) usageError(`option ${flag} needs a value`)
        value = argv[++i]
      }
      switch (flag) {
        case '--url': opts.url = value; break
        case '--doc': opts.doc = value; break
        case '--token': opts.token = value; break
        case '--timeout-ms': {
          const n = Number(value)
          if (!Number.isFinite(n) || n <= 0) usageError(`bad --timeout-ms ${value}`)
          opts.timeoutMs = n
          break
        }
        case '--roots':
          for (const spec of value.split(',').filter((s) => s !== '')) {
            const c = spec.indexOf(':')
            const kind = c === -1 ? 'text' : spec.slice(0, c)
            const name = c === -1 ? spec : spec.slice(c + 1)
            if (!['text', 'map', 'array', 'xml'].includes(kind)) {
              usageError(`bad root kind ${kind} in --roots`)
            }
            opts.roots.push({ kind, name })
          }
          break
      }
      continue
    }
    opts.actions.push(arg)
  }
  if (!opts.url) usageError('--url is required')
  if (opts.doc === null) usageError('--doc is required')
  for (const a of opts.actions) parseAction(a, usageError)
  return opts
}

// Splits "name:a:b:rest" into [name, a, b, rest]: the last field keeps any
// further colons (text and JSON may contain them).
const splitFields = (action, n) => {
  const parts = []
  let rest = action
  for (let i = 0; i < n - 1; i++) {
    const c = rest.indexOf(':')
    if (c === -1) return null
    parts.push(rest.slice(0, c))
    rest = rest.slice(c + 1)
  }
  parts.push(rest)
  return parts
}

const parseJson = (text, what, fail) => {
  try {
    return JSON.parse(text)
  } catch (e) {
    return fail(`${what} is not valid JSON: ${text}`)
  }
}

const parseInteger = (text, what, fail) => {
  if (!/^-?\d+$/.test(text)) return fail(`${what} is not an integer: ${text}`)
  return Number(text)
}

// Fields per action, counting the name itself.
const ARITY = {
  'wait-synced': 1,
  'wait-echo': 1,
  print: 1,
  quit: 1,
  'expect-permission-denied': 1,
  'insert-text': 4,
  'delete-text': 4,
  'set-map': 4,
  'wait-map': 4,
  'wait-text': 3,
  'set-awareness': 2,
  'wait-awareness-count': 2,
  'expect-close': 3,
  'set-token': 2,
  'wait-reconnected': 1,
  'wait-stopped': 1,
  'sleep-ms': 2
}

/** Parses one action string; calls fail(message) on a malformed action. */
const parseAction = (action, fail) => {
  const c = action.indexOf(':')
  const name = c === -1 ? action : action.slice(0, c)
  const arity = ARITY[name]
  if (arity === undefined) return fail(`unknown action: ${action}`)
  if (arity === 1) {
    if (c !== -1) return fail(`action ${name} takes no arguments: ${action}`)
    return { name }
  }
  const f = splitFields(action, arity)
  if (f === null) return fail(`action ${name} needs ${arity - 1} ':'-separated fields: ${action}`)
  switch (name) {
    case 'insert-text':
      return { name, root: f[1], index: parseInteger(f[2], 'INDEX', fail), text: f[3] }
    case 'delete-text':
      return { name, root: f[1], index: parseInteger(f[2], 'INDEX', fail), length: parseInteger(f[3], 'LENGTH', fail) }
    case 'set-map':
    case 'wait-map':
      return { name, root: f[1], key: f[2], value: parseJson(f[3], 'JSON', fail) }
    case 'wait-text':
      return { name, root: f[1], expected: f[2] }
    case 'set-awareness':
      return { name, state: parseJson(f[1], 'JSON', fail) }
    case 'wait-awareness-count':
      return { name, count: parseInteger(f[1], 'N', fail) }
    case 'expect-close':
      return { name, min: parseInteger(f[1], 'CODE_MIN', fail), max: parseInteger(f[2], 'CODE_MAX', fail) }
    case 'sleep-ms':
      return { name, ms: parseInteger(f[1], 'N', fail) }
    case 'set-token':
      return { name, token: f[1] }
  }
  return fail(`unknown action: ${action}`)
}

// --------------------------------------------------------------- helpers ---

const toJsonValue = (v) => (v instanceof Y.AbstractType ? v.toJSON() : v)

// JSON with sorted object keys, for deep equality of JSON values.
const canonical = (v) => JSON.stringify(v, (_k, val) => {
  if (val && typeof val === 'object' && !Array.isArray(val)) {
    const out = {}
    for (const k of Object.keys(val).sort()) out[k] = val[k]
    return out
  }
  return val
})

const rootValue = (doc, { kind, name }) => {
  switch (kind) {
    case 'text': return doc.getText(name).toString()
    case 'map': return doc.getMap(name).toJSON()
    case 'array': return doc.getArray(name).toJSON()
    case 'xml': return doc.getXmlFragment(name).toString()
  }
}

const stateVectorObject = (doc) => {
  const out = {}
  for (const [client, clock] of Y.decodeStateVector(Y.encodeStateVector(doc))) {
    out[String(client)] = clock
  }
  return out
}

const awarenessObject = (awareness) => {
  const out = {}
  for (const [client, state] of awareness.getStates()) out[String(client)] = state
  return out
}

/**
 * Resolves once check() returns a non-undefined value. check() is re-run
 * whenever notifyAll() is called (doc updates, awareness changes, sync and
 * connection events, permission-denied warnings). Rejects after timeoutMs.
 */
const waitFor = (what, timeoutMs, check, describe = () => ({})) => new Promise((resolve, reject) => {
  let done = false
  const finish = (fn, arg) => {
    if (done) return
    done = true
    clearTimeout(timer)
    notifiers.delete(run)
    fn(arg)
  }
  const run = () => {
    if (done) return
    let result
    try {
      result = check()
    } catch (e) {
      finish(reject, e)
      return
    }
    if (result !== undefined) finish(resolve, result)
  }
  const timer = setTimeout(() => {
    finish(reject, new ActionError(`timeout after ${timeoutMs}ms waiting for ${what}`,
      { timeout: true, ...describe() }))
  }, timeoutMs)
  notifiers.add(run)
  run()
})

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

const hookNotifications = (doc, provider) => {
  doc.on('update', notifyAll)
  provider.awareness.on('change', notifyAll)
  provider.awareness.on('update', notifyAll)
  provider.on('sync', notifyAll)
  provider.on('status', notifyAll)
}

// ---------------------------------------------------------------- client ---

const main = async () => {
  const opts = parseArgs(process.argv.slice(2))
  const params = opts.token === null ? {} : { token: opts.token }
  const makeProvider = (doc, connect) => new WebsocketProvider(opts.url, opts.doc, doc, {
    WebSocketPolyfill: WebSocket,
    params,
    connect,
    disableBc: true
  })

  const doc = new Y.Doc()
  const provider = makeProvider(doc, true)
  hookNotifications(doc, provider)
  log(`connecting to ${provider.url} as client ${doc.clientID}`)

  // Server-initiated closes, in arrival order (local closes report event=null).
  const closes = []
  // Closes after which the provider stopped reconnecting (y-websocket's 'closed' event).
  const finalCloses = []
  provider.on('closed', (close) => {
    finalCloses.push({ closed: close.code, reason: close.reason || '' })
    notifyAll()
  })
  let closesConsumed = 0
  let lastConnectionError = null
  provider.on('status', ({ status }) => {
    log(`status ${status}`)
    if (status === 'connected') lastConnectionError = null
  })
  provider.on('connection-error', (event) => {
    lastConnectionError = (event && (event.message || (event.error && event.error.message))) || 'error'
    log(`connection-error ${lastConnectionError}`)
  })
  provider.on('connection-close', (event) => {
    if (event == null) return
    const close = { closed: event.code, reason: event.reason || '' }
    if (lastConnectionError !== null) close.error = lastConnectionError
    log(`connection-close ${event.code} ${JSON.stringify(close.reason)}`)
    closes.push(close)
    notifyAll()
  })

  let destroyed = false
  const shutdown = async () => {
    if (destroyed) return
    destroyed = true
    const sock = provider.ws
    provider.destroy()
    // Give the close handshake (and the awareness "left" message sent by
    // destroy) a moment to reach the server before the process exits.
    if (sock && sock.readyState !== WebSocket.CLOSED) {
      await new Promise((resolve) => {
        const t = setTimeout(resolve, 1000)
        sock.addEventListener('close', () => { clearTimeout(t); resolve() })
      })
    }
  }

  const exit = async (code) => {
    await shutdown()
    process.exit(code)
  }

  const timeoutMs = opts.timeoutMs

  const actions = {
    'wait-synced': async () => {
      await waitFor('sync', timeoutMs, () => (provider.synced ? true : undefined),
        () => ({ connected: provider.wsconnected, last_close: closes[closes.length - 1] || null }))
    },

    'insert-text': async ({ root, index, text }) => {
      doc.getText(root).insert(index, text)
    },

    'delete-text': async ({ root, index, length }) => {
      doc.getText(root).delete(index, length)
    },

    'set-map': async ({ root, key, value }) => {
      doc.getMap(root).set(key, value)
    },

    'wait-text': async ({ root, expected }) => {
      const text = doc.getText(root)
      await waitFor(`text ${root} == ${JSON.stringify(expected)}`, timeoutMs,
        () => (text.toString() === expected ? true : undefined),
        () => ({ actual: text.toString() }))
    },

    'wait-map': async ({ root, key, value }) => {
      const map = doc.getMap(root)
      const want = canonical(value)
      await waitFor(`map ${root}.${key} == ${want}`, timeoutMs,
        () => (map.has(key) && canonical(toJsonValue(map.get(key))) === want ? true : undefined),
        () => ({ actual: map.has(key) ? toJsonValue(map.get(key)) : null }))
    },

    print: async () => {
      const content = {}
      if (opts.roots.length > 0) {
        for (const r of opts.roots) content[r.name] = rootValue(doc, r)
      } else {
        // Without --roots, only roots this client already typed are known.
        for (const [name, type] of doc.share) {
          if (type instanceof Y.Text) content[name] = type.toString()
          else if (type instanceof Y.Map || type instanceof Y.Array) content[name] = type.toJSON()
          else if (type instanceof Y.XmlFragment) content[name] = type.toString()
        }
      }
      emit({ content })
    },

    'wait-echo': async () => {
      // y-websocket has no acks. Proof that the server holds all our updates:
      // a second, independent client syncs the same document from the server
      // and must end up with every (client, clock) our document has.
      const want = stateVectorObject(doc)
      const doc2 = new Y.Doc()
      const provider2 = makeProvider(doc2, false)
      // stay invisible to other clients' awareness counts
      provider2.awareness.setLocalState(null)
      hookNotifications(doc2, provider2)
      provider2.connect()
      const covered = () => {
        if (!provider2.synced) return undefined
        const have = stateVectorObject(doc2)
        for (const [client, clock] of Object.entries(want)) {
          if ((have[client] || 0) < clock) return undefined
        }
        return have
      }
      try {
        const have = await waitFor('echo of our updates through a second client', timeoutMs, covered,
          () => ({ want, have: stateVectorObject(doc2), synced2: provider2.synced }))
        emit({ echoed: want, server_state: have })
      } finally {
        const sock = provider2.ws
        provider2.destroy()
        doc2.destroy()
        if (sock && sock.readyState !== WebSocket.CLOSED) {
          await new Promise((resolve) => {
            const t = setTimeout(resolve, 1000)
            sock.addEventListener('close', () => { clearTimeout(t); resolve() })
          })
        }
      }
    },

    'set-awareness': async ({ state }) => {
      provider.awareness.setLocalState(state)
    },

    'wait-awareness-count': async ({ count }) => {
      await waitFor(`awareness count >= ${count}`, timeoutMs,
        () => (provider.awareness.getStates().size >= count ? true : undefined),
        () => ({ awareness: awarenessObject(provider.awareness) }))
      emit({ awareness: awarenessObject(provider.awareness) })
    },

    'expect-close': async ({ min, max }) => {
      const close = await waitFor(`connection close with code in [${min}, ${max}]`, timeoutMs,
        () => (closesConsumed < closes.length ? closes[closesConsumed++] : undefined),
        () => ({ connected: provider.wsconnected }))
      // stop reconnecting, whatever the code was
      provider.disconnect()
      if (close.closed < min || close.closed > max) {
        throw new ActionError(`close code ${close.closed} not in [${min}, ${max}]`, close)
      }
      emit(close)
    },

    'expect-permission-denied': async () => {
      const reason = await waitFor('permission-denied auth message', timeoutMs,
        () => (permissionDenialsConsumed < permissionDenials.length
          ? permissionDenials[permissionDenialsConsumed++]
          : undefined),
        () => ({ connected: provider.wsconnected, last_close: closes[closes.length - 1] || null }))
      emit({ permission_denied: reason })
    },

    // The documented way to renew an open document's token: update the provider's params
    // (y-websocket reads them on its next connection); the server closes the socket at the
    // old token's exp with 1008, and the provider reconnects once, with the new token.
    'set-token': async ({ token }) => {
      params.token = token
    },

    // The next server close, then synced again on the next connection -> {"closed": code}.
    'wait-reconnected': async () => {
      const close = await waitFor('a server close', timeoutMs,
        () => (closesConsumed < closes.length ? closes[closesConsumed++] : undefined),
        () => ({ connected: provider.wsconnected }))
      await waitFor('synced after reconnecting', timeoutMs,
        () => (provider.wsconnected && provider.synced ? true : undefined),
        () => ({ connected: provider.wsconnected, closes }))
      emit(close)
    },

    // Until the provider stops reconnecting after a final close -> {"closed": code,
    // "closes": [every server close code so far]}.
    'wait-stopped': async () => {
      const close = await waitFor('a final close', timeoutMs,
        () => (finalCloses.length > 0 ? finalCloses[0] : undefined),
        () => ({ connected: provider.wsconnected, closes }))
      emit({ ...close, closes: closes.map((c) => c.closed) })
    },

    'sleep-ms': async ({ ms }) => {
      await sleep(ms)
    },

    quit: async () => {
      emit({ ok: 'quit' })
      await exit(0)
    }
  }

  const runAction = async (raw) => {
    let parsed
    try {
      parsed = parseAction(raw, (msg) => { throw new ActionError(msg) })
      await actions[parsed.name](parsed)
    } catch (e) {
      const out = { error: e instanceof Error ? e.message : String(e), action: raw }
      if (e instanceof ActionError) Object.assign(out, e.extra)
      else if (e && e.stack) log(e.stack)
      emit(out)
      await exit(EXIT_FAIL)
    }
    emit({ ok: raw })
  }

  for (const raw of opts.actions) await runAction(raw)

  if (opts.stdinOps) {
    const rl = readline.createInterface({ input: process.stdin, crlfDelay: Infinity })
    for await (const line of rl) {
      let raw = line.trim()
      if (raw === '' || raw.startsWith('#')) continue
      // a JSON string literal allows actions containing newlines
      if (raw.startsWith('"')) {
        try {
          raw = JSON.parse(raw)
        } catch (e) {
          emit({ error: `bad JSON string action: ${raw}`, action: raw })
          await exit(EXIT_FAIL)
        }
      }
      await runAction(raw)
    }
  }

  await exit(0)
}

process.on('uncaughtException', (e) => {
  emit({ error: `uncaught: ${e && e.message ? e.message : String(e)}` })
  if (e && e.stack) log(e.stack)
  process.exit(EXIT_FAIL)
})
process.on('unhandledRejection', (e) => {
  emit({ error: `unhandled rejection: ${e && e.message ? e.message : String(e)}` })
  if (e && e.stack) log(e.stack)
  process.exit(EXIT_FAIL)
})

main()
