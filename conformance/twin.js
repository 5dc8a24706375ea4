'use strict';
// Twin device peer: the OFFICIAL azure-iot-device SDK driving device twins, one command at a
// time from stdin.
//
//   DEVICE_CS   device connection string (required)
//   TRANSPORT   mqtt | mqttws | amqp | amqpws   (default mqtt)
//   CA_FILE     optional PEM file trusted for the server certificate
//   MODEL_ID    optional Plug and Play model id, passed as client.setOptions({ modelId })
//               (the Node SDK announces it only over MQTT: &model-id= in the user name)
//
// Every output line is one JSON object. After client.open() it prints {"event":"connected"}.
// Commands are JSON objects, one a line on stdin; each is answered by one line with the same
// "op", plus "error":{name,message,...} when the SDK reported a failure:
//   {"op":"get"}               client.getTwin() (later: twin.get()) → {"op":"get","twin":{"desired":…,"reported":…}}
//   {"op":"report","patch":P}  twin.properties.reported.update(P)  → {"op":"report"}
//   {"op":"subscribe"}         twin.on('properties.desired', …); answered once the SDK has
//                              enabled desired updates (MQTT SUBACK / AMQP PUT answered)
// Desired-property events print {"event":"desired","source":S,"patch":…} where S is
//   "initial"  the SDK's replay of the desired section when the listener is added,
//   "get"      the SDK's refresh after a twin GET,
//   "push"     a desired patch the hub pushed.
// Over MQTT every twin message the hub sends is also printed, before the SDK handles it, as
// {"wire":"mqtt","topic":…,"body":…} (diagnostics: the SDK itself ignores the status).
// Exit codes: 0 once stdin closes or after SIGINT/SIGTERM, 1 on a connect error or a
// disconnect, 2 on bad usage.

const readline = require('readline');
const { Client } = require('azure-iot-device');
const { Mqtt, MqttWs } = require('azure-iot-device-mqtt');
const { Amqp, AmqpWs } = require('azure-iot-device-amqp');

const transports = { mqtt: Mqtt, mqttws: MqttWs, amqp: Amqp, amqpws: AmqpWs };

const cs = process.env.DEVICE_CS;
const transportName = (process.env.TRANSPORT || 'mqtt').toLowerCase();
if (!cs || !transports[transportName]) {
  console.error('usage: DEVICE_CS=... TRANSPORT=mqtt|mqttws|amqp|amqpws [CA_FILE=ca.pem] [MODEL_ID=dtmi:...] node twin.js');
  process.exit(2);
}

function out(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

function describe(err) {
  if (!err) return { name: 'Error', message: 'unknown error' };
  const d = { name: err.name || 'Error', message: typeof err.message === 'string' ? err.message : JSON.stringify(err.message) };
  // Over AMQP the transport wraps the twin client's error (amqpError: the status-based
  // FormatError etc.), whose own amqpError is the hub's response message.
  const m = err.amqpError;
  if (m instanceof Error) {
    d.cause = describe(m);
  } else if (m && (m.message_annotations || m.body)) {
    d.amqp = {
      annotations: m.message_annotations,
      body: m.body && m.body.content ? Buffer.from(m.body.content).toString() : undefined
    };
  } else if (m && m.condition) {
    d.amqp = { condition: m.condition, description: m.description };
  }
  if (err.innerError) d.inner = describe(err.innerError);
  return d;
}

// inGet is true while the SDK handles a twin GET response: the desired events it fires then
// are its refresh, not a push.
let inGet = false;

// withTwinHooks wraps the transport: getTwin marks the GET response, and
// enableTwinDesiredPropertiesUpdates is the only place that tells when the desired
// subscription is in place (twin.on() hides it). Over MQTT it also taps the twin topics.
function withTwinHooks(Base) {
  return class extends Base {
    constructor(...args) {
      super(...args);
      transportInstance = this;
      if (this._mqtt && typeof this._mqtt.prependListener === 'function') {
        this._mqtt.prependListener('message', (topic, payload) => {
          if (String(topic).startsWith('$iothub/twin/')) {
            out({ wire: 'mqtt', topic: String(topic), body: payload ? payload.toString() : '' });
          }
        });
      }
    }
    getTwin(callback) {
      super.getTwin((err, ...rest) => {
        inGet = true;
        try {
          callback(err, ...rest);
        } finally {
          inGet = false;
        }
      });
    }
    enableTwinDesiredPropertiesUpdates(callback) {
      super.enableTwinDesiredPropertiesUpdates((err, ...rest) => {
        if (this.__onEnabled) this.__onEnabled(err);
        callback(err, ...rest);
      });
    }
  };
}

let transportInstance = null;
const noRetry = { shouldRetry: () => false, nextRetryTimeout: () => -1 };
const client = Client.fromConnectionString(cs, withTwinHooks(transports[transportName]));
client.setRetryPolicy(noRetry);

let exiting = false;
function shutdown(code) {
  if (exiting) return;
  exiting = true;
  client.close().catch(() => undefined).then(() => process.exit(code));
  setTimeout(() => process.exit(code), 3000).unref();
}

client.on('error', (err) => { out({ event: 'error', error: describe(err) }); shutdown(1); });
client.on('disconnect', (evt) => {
  out({ event: 'disconnected', error: evt && evt.reason ? describe(evt.reason) : undefined });
  shutdown(1);
});
process.on('SIGINT', () => shutdown(0));
process.on('SIGTERM', () => shutdown(0));

let twin = null;

// plain is a twin section without the SDK's update() function.
function plain(section) {
  return JSON.parse(JSON.stringify(section));
}

async function get() {
  if (!twin) {
    twin = await client.getTwin();
    twin.on('error', (err) => out({ event: 'twin-error', error: describe(err) }));
  } else {
    await twin.get();
  }
  return { desired: plain(twin.properties.desired), reported: plain(twin.properties.reported) };
}

async function report(patch) {
  if (!twin) await get();
  await new Promise((resolve, reject) => {
    twin.properties.reported.update(patch, (err) => (err ? reject(err) : resolve()));
  });
}

async function subscribe() {
  if (!twin) await get();
  const enabled = new Promise((resolve, reject) => {
    transportInstance.__onEnabled = (err) => {
      transportInstance.__onEnabled = null;
      if (err) reject(err);
      else resolve();
    };
  });
  // The listener's first call, on the next tick, replays the desired section.
  let initial = true;
  twin.on('properties.desired', (patch) => {
    out({ event: 'desired', source: initial ? 'initial' : (inGet ? 'get' : 'push'), patch: plain(patch) });
  });
  process.nextTick(() => { initial = false; });
  await enabled;
}

const ops = { get, report: (cmd) => report(cmd.patch), subscribe };

// Commands run one at a time, in order.
let chain = Promise.resolve();
function run(line) {
  if (!line.trim()) return;
  let cmd;
  try {
    cmd = JSON.parse(line);
  } catch (err) {
    out({ op: 'bad-command', error: describe(err) });
    return;
  }
  chain = chain.then(async () => {
    const op = ops[cmd.op];
    if (!op) {
      out({ op: cmd.op, error: { name: 'UsageError', message: 'unknown op' } });
      return;
    }
    try {
      const result = await op(cmd);
      out(Object.assign({ op: cmd.op }, cmd.op === 'get' ? { twin: result } : {}));
    } catch (err) {
      out({ op: cmd.op, error: describe(err) });
    }
  });
}

async function main() {
  // One setOptions call: a second one replaces the transport's TLS options.
  const options = {};
  if (process.env.CA_FILE) options.ca = process.env.CA_FILE;
  if (process.env.MODEL_ID) options.modelId = process.env.MODEL_ID;
  if (Object.keys(options).length > 0) await client.setOptions(options);
  await client.open();
  out({ event: 'connected' });
  const rl = readline.createInterface({ input: process.stdin });
  rl.on('line', run);
  rl.on('close', () => { chain.then(() => shutdown(0)); });
}

main().catch((err) => {
  out({ event: 'error', error: describe(err) });
  shutdown(1);
});
