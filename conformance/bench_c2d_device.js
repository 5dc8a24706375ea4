'use strict';
// Cloud-to-device device for `iothub bench --c2d`: one OFFICIAL azure-iot-device client
// receiving messages with client.on('message') and settling each with client.complete
// (MQTT: the SDK acknowledges on receipt, complete is a no-op; AMQP: accepted).
//
// Protocol (the same as `iothub bench --c2d-device`):
//   stdin line 1: JSON {impl, transport: mqtt|mqtt-ws|amqp|amqp-ws, ca_pem (used only
//                 without NODE_EXTRA_CA_CERTS), conn_strings: [one], connect_timeout_ms}
//   stdout:       {"type":"connected", connected: 1} once open() succeeded AND the
//                 message subscription is in place (the transport's enableC2D callback),
//                 or {"type":"connected", connected: 0, failed: 1, first_error}
//   per message:  {"type":"c2d", lat_us} — this process's wall clock minus the message's
//                 property "sent" (unix nanoseconds), then client.complete(msg)
//   stdin "stats" -> {"type":"stats", cpu_seconds}
//   stdin "close" or EOF -> closes the client, {"type":"closed"}, exit 0

const readline = require('readline');
const { performance } = require('perf_hooks');
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

function out(obj) { process.stdout.write(JSON.stringify(obj) + '\n'); }

// enableC2D's callback is where the SDK learns the subscription is in place.
function withReadyHook(Base) {
  return class extends Base {
    enableC2D(callback) {
      super.enableC2D((err, ...rest) => {
        const cb = this.__onC2DEnabled;
        this.__onC2DEnabled = null;
        if (cb) cb(err);
        callback(err, ...rest);
      });
    }
  };
}

let client = null;

// Wall clock in microseconds, sub-millisecond.
function nowUs() { return (performance.timeOrigin + performance.now()) * 1e3; }

function sentUs(msg) {
  for (let i = 0; i < msg.properties.count(); i++) {
    const p = msg.properties.getItem(i);
    if (p.key === 'sent') return Number(BigInt(p.value) / 1000n);
  }
  return 0;
}

async function main(spec) {
  const Base = transports[spec.transport];
  if (!Base) throw new Error('unknown transport ' + spec.transport);
  const Hooked = withReadyHook(Base);
  client = Client.fromConnectionString(spec.conn_strings[0], Hooked);
  client.on('error', () => undefined);
  if (!process.env.NODE_EXTRA_CA_CERTS) await client.setOptions({ ca: spec.ca_pem });
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error('connect timed out')), spec.connect_timeout_ms || 60000);
  });
  try {
    await Promise.race([(async () => {
      await client.open();
      const tr = client._transport;
      const enabled = new Promise((resolve, reject) => {
        tr.__onC2DEnabled = (err) => (err ? reject(err) : resolve());
      });
      client.on('message', (msg) => {
        out({ type: 'c2d', lat_us: nowUs() - sentUs(msg) });
        client.complete(msg, () => undefined);
      });
      await enabled;
    })(), timeout]);
  } finally {
    clearTimeout(timer);
  }
  out({ type: 'connected', connected: 1 });
}

async function close() {
  if (client) await Promise.race([client.close().catch(() => undefined), new Promise((r) => setTimeout(r, 5000))]);
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
      console.error('bad device spec: ' + e.message);
      process.exit(2);
    }
    started = main(spec).catch((err) => {
      out({ type: 'connected', connected: 0, failed: 1, first_error: describe(err) });
    });
    return;
  }
  if (line === 'stats') {
    const u = process.cpuUsage();
    out({ type: 'stats', cpu_seconds: (u.user + u.system) / 1e6 });
  } else if (line === 'close' && !closing) {
    closing = true;
    started.then(close);
  }
});
rl.on('close', () => {
  if (!closing) {
    closing = true;
    (started || Promise.resolve()).then(close);
  }
});
