'use strict';
// Device peer for cloud-to-device messages: the OFFICIAL azure-iot-device SDK receiving
// messages with client.on('message') and settling each with complete, reject or abandon.
//
//   DEVICE_CS   device connection string (required)
//   TRANSPORT   mqtt | mqttws | amqp | amqpws | http   (default mqtt)
//   CA_FILE     optional PEM file trusted for the server certificate
//   MODE        complete | reject | abandon            (default complete)
//
// Prints one JSON line per event: {"event":"ready"} once the C2D subscription is in place
// (the transport's enableC2D callback; over HTTP once polling starts), {"event":"message",
// "messageId":…,"correlationId":…,"data":…,"properties":{…},"ack":…} per message, then
// {"event":"settled","messageId":…,"mode":…} or {"event":"settle-error","messageId":…,
// "mode":…,"error":…} (over MQTT the SDK throws on reject and abandon).
// Exit codes: 0 after SIGINT/SIGTERM or stdin closing, 1 on a connect error, 2 on bad usage.

const { Client } = require('azure-iot-device');
const { Mqtt, MqttWs } = require('azure-iot-device-mqtt');
const { Amqp, AmqpWs } = require('azure-iot-device-amqp');
const { Http } = require('azure-iot-device-http');

const transports = { mqtt: Mqtt, mqttws: MqttWs, amqp: Amqp, amqpws: AmqpWs, http: Http };
const cs = process.env.DEVICE_CS;
const transportName = (process.env.TRANSPORT || 'mqtt').toLowerCase();
const mode = process.env.MODE || 'complete';
if (!cs || !transports[transportName] || !['complete', 'reject', 'abandon'].includes(mode)) {
  console.error('usage: DEVICE_CS=... TRANSPORT=mqtt|mqttws|amqp|amqpws|http MODE=complete|reject|abandon node c2d_device.js');
  process.exit(2);
}

function out(obj) { console.log(JSON.stringify(obj)); }
function describe(err) {
  if (!err) return 'unknown error';
  return (err.name || 'Error') + ': ' + (err.message || String(err));
}

// enableC2D's callback is where the SDK learns the subscription is in place.
function withReadyHook(Base) {
  return class extends Base {
    enableC2D(callback) {
      super.enableC2D((err, ...rest) => {
        if (err) out({ event: 'error', error: describe(err) });
        else if (!this.__ready) { this.__ready = true; out({ event: 'ready' }); }
        callback(err, ...rest);
      });
    }
  };
}

const client = Client.fromConnectionString(cs, withReadyHook(transports[transportName]));
client.setRetryPolicy({ shouldRetry: () => false, nextRetryTimeout: () => -1 });

let exiting = false;
function shutdown(code) {
  if (exiting) return;
  exiting = true;
  client.close().catch(() => undefined).then(() => process.exit(code));
  setTimeout(() => process.exit(code), 3000).unref();
}
client.on('error', (err) => { out({ event: 'error', error: describe(err) }); shutdown(1); });
process.on('SIGINT', () => shutdown(0));
process.on('SIGTERM', () => shutdown(0));
process.stdin.on('end', () => shutdown(0));
process.stdin.resume();

async function main() {
  const options = {};
  if (process.env.CA_FILE) options.ca = process.env.CA_FILE;
  if (transportName === 'http') options.http = { receivePolicy: { interval: 1 } };
  if (Object.keys(options).length > 0) await client.setOptions(options);
  await client.open();
  client.on('message', (msg) => {
    const props = {};
    for (let i = 0; i < msg.properties.count(); i++) {
      const p = msg.properties.getItem(i);
      props[p.key] = p.value;
    }
    out({ event: 'message', messageId: msg.messageId, correlationId: msg.correlationId,
      data: msg.getData().toString(), properties: props, ack: msg.ack });
    try {
      client[mode](msg, (err) => {
        if (err) out({ event: 'settle-error', messageId: msg.messageId, mode, error: describe(err) });
        else out({ event: 'settled', messageId: msg.messageId, mode });
      });
    } catch (err) {
      out({ event: 'settle-error', messageId: msg.messageId, mode, error: describe(err) });
    }
  });
  if (transportName === 'http') out({ event: 'ready' }); // polling: no subscription to wait for
}

main().catch((err) => { out({ event: 'error', error: describe(err) }); shutdown(1); });
