'use strict';
// Device fleet for `iothub bench`: many OFFICIAL azure-iot-device clients in
// one Node process, each answering the method spec.method with status 200
// and the request payload.
//
// Protocol (the same as `iothub bench --fleet`):
//   stdin line 1: JSON {impl, transport: mqtt|mqtt-ws|amqp|amqp-ws, ca_pem (used only
//                 without NODE_EXTRA_CA_CERTS),
//                 conn_strings: [...], method, connect_concurrency, connect_timeout_ms}
//   stdout:       {"type":"connected", connected, failed, first_error, connect_seconds,
//                  connect_p50_ms, connect_p99_ms, before: mem, after: mem}
//   stdin "stats" -> {"type":"stats", cpu_seconds, mem}
//   stdin "twin {warmup, updates, timeout_ms, max_errors}" -> the twin phase on the first
//                 client: client.getTwin(), then warmup + updates calls of
//                 twin.properties.reported.update({lastReboot: <ISO time>, n: i}), one at a
//                 time, each awaiting the hub's answer. Writes {"type":"twin_window_start"}
//                 when the measured updates begin (not if getTwin or a warm-up update failed),
//                 then {"type":"twin_result", updates, errors, first_error, seconds,
//                 latencies_us: [...], cpu_seconds (process.cpuUsage() over the window)}.
//   stdin "twin-step" -> one more update after a twin phase:
//                 {"type":"twin_step", updates: 1, latencies_us: [x]} or {..., errors: 1, first_error}.
//   stdin "close" or EOF -> closes every client, {"type":"closed"}, exit 0
// mem = {rss_bytes, heap_bytes (V8 heapUsed + external), stack_bytes: 0}, sampled after
// global.gc() (run node with --expose-gc).
//
// A client counts as connected once open() succeeded AND its method subscription is
// in place (MQTT SUBACK / AMQP method links attached), like the Go fleet.

const readline = require('readline');
const { Client } = require('azure-iot-device');
const { Mqtt, MqttWs } = require('azure-iot-device-mqtt');
const { Amqp, AmqpWs } = require('azure-iot-device-amqp');

const transports = { mqtt: Mqtt, 'mqtt-ws': MqttWs, amqp: Amqp, 'amqp-ws': AmqpWs };

function describe(err) {
  if (!err) return 'unknown error';
  let s = (err.name || 'Error') + ': ' + (err.message || String(err));
  if (err.innerError) s += ' (inner: ' + describe(err.innerError) + ')';
  return s;
}

function mem() {
  if (global.gc) { global.gc(); global.gc(); }
  const m = process.memoryUsage();
  return { rss_bytes: m.rss, heap_bytes: m.heapUsed + m.external, stack_bytes: 0 };
}

function out(obj) { process.stdout.write(JSON.stringify(obj) + '\n'); }

// The transport's enableMethods() callback is the only place that says the method
// subscription is in place. The subclass hands it to whoever created the transport
// last: Client.fromConnectionString constructs the transport synchronously.
let lastTransport = null;
function withReadyHook(Base) {
  return class extends Base {
    constructor(...args) {
      super(...args);
      lastTransport = this;
    }
    enableMethods(callback) {
      super.enableMethods((err, ...rest) => {
        const cb = this.__onMethodsEnabled;
        this.__onMethodsEnabled = null;
        if (cb) cb(err);
        callback(err, ...rest);
      });
    }
  };
}

const clients = [];

async function connectOne(spec, Transport, cs) {
  const client = Client.fromConnectionString(cs, Transport);
  const tr = lastTransport;
  client.on('error', () => undefined);
  // Trust the hub through NODE_EXTRA_CA_CERTS when it is set, as a production device
  // trusts public roots: setOptions({ca}) builds a TLS context per client, which costs
  // ~0.1 s of CPU and memory per client and is not what is being compared.
  if (!process.env.NODE_EXTRA_CA_CERTS) await client.setOptions({ ca: spec.ca_pem });
  const enabled = new Promise((resolve, reject) => {
    tr.__onMethodsEnabled = (err) => (err ? reject(err) : resolve());
  });
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error('connect timed out')), spec.connect_timeout_ms || 60000);
  });
  try {
    await Promise.race([(async () => {
      await client.open();
      client.onDeviceMethod(spec.method, (request, response) => {
        response.send(200, request.payload, () => undefined);
      });
      await enabled;
    })(), timeout]);
  } catch (err) {
    client.close().catch(() => undefined);
    throw err;
  } finally {
    clearTimeout(timer);
  }
  clients.push(client);
}

async function main(spec) {
  const Transport = transports[spec.transport];
  if (!Transport) throw new Error('unknown transport ' + spec.transport);
  const Hooked = withReadyHook(Transport);
  const conns = spec.conn_strings;
  spec.conn_strings = null;
  const msg = { type: 'connected', connected: 0, failed: 0, before: mem() };
  const durs = [];
  let next = 0;
  const start = process.hrtime.bigint();
  async function worker() {
    while (next < conns.length) {
      const cs = conns[next++];
      const t0 = process.hrtime.bigint();
      try {
        await connectOne(spec, Hooked, cs);
        msg.connected++;
        durs.push(Number(process.hrtime.bigint() - t0) / 1e6);
      } catch (err) {
        msg.failed++;
        if (!msg.first_error) msg.first_error = describe(err);
      }
    }
  }
  const workers = [];
  for (let i = 0; i < Math.max(1, spec.connect_concurrency || 1); i++) workers.push(worker());
  await Promise.all(workers);
  msg.connect_seconds = Number(process.hrtime.bigint() - start) / 1e9;
  durs.sort((a, b) => a - b);
  const pct = (q) => (durs.length ? durs[Math.min(durs.length - 1, Math.max(0, Math.ceil(q * durs.length) - 1))] : 0);
  msg.connect_p50_ms = pct(0.5);
  msg.connect_p99_ms = pct(0.99);
  msg.after = mem();
  out(msg);
}

// The twin object and its update of the twin phase, kept for the twin-step lines.
let twinState = null;
const twinTimeoutMs = 10000;

function withTimeout(p, what, ms) {
  let timer;
  const t = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(what + ' timed out')), ms);
  });
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}

function twinPatch(i) {
  return { lastReboot: new Date().toISOString(), n: i };
}

// The twin phase (see the protocol above), as `iothub bench --fleet` runs it for Go.
async function twinPhase(spec) {
  const res = { type: 'twin_result', updates: 0, errors: 0 };
  const fail = (what, err) => {
    res.errors = 1;
    res.first_error = what + ': ' + describe(err);
    out(res);
  };
  const client = clients[0];
  if (!client) return fail('twin phase', new Error('no connected client'));
  const timeoutMs = spec.timeout_ms || twinTimeoutMs;
  const maxErrors = spec.max_errors || 5;
  const warmup = spec.warmup || 0;
  let twin;
  try {
    twin = await withTimeout(client.getTwin(), 'getTwin', timeoutMs);
  } catch (err) {
    return fail('getTwin', err);
  }
  const update = (patch) => withTimeout(new Promise((resolve, reject) => {
    twin.properties.reported.update(patch, (err) => (err ? reject(err) : resolve()));
  }), 'update', timeoutMs);
  twinState = { update, n: 1000000000 };
  const patch = twinPatch;
  for (let i = 0; i < warmup; i++) {
    try {
      await update(patch(i));
    } catch (err) {
      return fail('warm-up update', err);
    }
  }
  out({ type: 'twin_window_start' });
  const lat = [];
  const cpu0 = process.cpuUsage();
  const start = process.hrtime.bigint();
  for (let i = 0; i < spec.updates; i++) {
    const p = patch(warmup + i);
    const t0 = process.hrtime.bigint();
    try {
      await update(p);
      lat.push(Number(process.hrtime.bigint() - t0) / 1e3);
    } catch (err) {
      res.errors++;
      if (!res.first_error) res.first_error = describe(err);
      if (res.errors >= maxErrors) break;
    }
  }
  res.seconds = Number(process.hrtime.bigint() - start) / 1e9;
  const cpu = process.cpuUsage(cpu0);
  res.cpu_seconds = (cpu.user + cpu.system) / 1e6;
  res.updates = lat.length;
  res.latencies_us = lat;
  out(res);
}

// One update after a twin phase (the paired measurement): the parent asks for each.
async function twinStep() {
  if (!twinState) {
    out({ type: 'twin_step', updates: 0, errors: 1, first_error: 'twin-step before a twin phase' });
    return;
  }
  const p = twinPatch(++twinState.n);
  const t0 = process.hrtime.bigint();
  try {
    await twinState.update(p);
    out({ type: 'twin_step', updates: 1, latencies_us: [Number(process.hrtime.bigint() - t0) / 1e3] });
  } catch (err) {
    out({ type: 'twin_step', updates: 0, errors: 1, first_error: describe(err) });
  }
}

async function closeAll() {
  let next = 0;
  async function worker() {
    while (next < clients.length) {
      const c = clients[next++];
      await Promise.race([c.close().catch(() => undefined), new Promise((r) => setTimeout(r, 5000))]);
    }
  }
  const ws = [];
  for (let i = 0; i < 64; i++) ws.push(worker());
  await Promise.all(ws);
  // Writes to a pipe are asynchronous: exit once the line is out.
  process.stdout.write(JSON.stringify({ type: 'closed' }) + '\n', () => process.exit(0));
}

const rl = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
let started = null;
let closing = false;
rl.on('line', (line) => {
  line = line.trim();
  if (!started) {
    let spec;
    try {
      spec = JSON.parse(line);
    } catch (e) {
      console.error('bad fleet spec: ' + e.message);
      process.exit(2);
    }
    started = main(spec).catch((err) => {
      out({ type: 'connected', connected: 0, failed: 1, first_error: describe(err) });
    });
    return;
  }
  if (line === 'stats') {
    const u = process.cpuUsage();
    out({ type: 'stats', cpu_seconds: (u.user + u.system) / 1e6, mem: mem() });
  } else if (line.startsWith('twin ')) {
    let spec;
    try {
      spec = JSON.parse(line.slice(5));
    } catch (e) {
      out({ type: 'twin_result', updates: 0, errors: 1, first_error: 'bad twin spec: ' + e.message });
      return;
    }
    started.then(() => twinPhase(spec)).catch((err) => {
      out({ type: 'twin_result', updates: 0, errors: 1, first_error: describe(err) });
    });
  } else if (line === 'twin-step') {
    started.then(twinStep).catch((err) => {
      out({ type: 'twin_step', updates: 0, errors: 1, first_error: describe(err) });
    });
  } else if (line === 'close' && !closing) {
    closing = true;
    started.then(closeAll);
  }
});
rl.on('close', () => {
  if (!closing) {
    closing = true;
    (started || Promise.resolve()).then(closeAll);
  }
});
