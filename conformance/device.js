'use strict';
// Device peer for protocol-fidelity tests: the OFFICIAL azure-iot-device SDK
// receiving a direct method.
//
//   DEVICE_CS   device connection string (required), e.g.
//               HostName=localhost;DeviceId=dev1;SharedAccessKey=<base64>
//               optional GatewayHostName=localhost:PORT changes where MQTT/AMQP
//               (not the WebSocket variants) connect; HostName stays the SAS
//               audience and the MQTT username prefix.
//   TRANSPORT   mqtt | mqttws | amqp | amqpws   (default mqtt)
//   CA_FILE     optional PEM file trusted for the server certificate
//   CERT_FILE, KEY_FILE  optional PEM device certificate (with its chain) and key, for a
//               connection string with x509=true (X.509 self-signed or CA-signed devices)
//   METHOD      method name to register (default reboot)
//   RETRY       set to 1 to keep the SDK's default retry policy (default: no retries,
//               so that a missing or refusing server fails fast and cleanly)
//   DELAY_MS    optional delay before each method response (a slow device)
//
// Prints "CONNECTED" once client.open() succeeds, and "READY" once the direct-method
// subscription (MQTT SUBSCRIBE acked / AMQP method links attached) has completed.
// Every method call prints "METHOD <name> <requestId> <payload-json>" and is answered
// with status 200 and body {"result":"ok","payload":<request payload>}.
// Exit codes: 0 after SIGINT/SIGTERM, 1 on a connect/enable error, 2 on bad usage.

const { Client } = require('azure-iot-device');
const { Mqtt, MqttWs } = require('azure-iot-device-mqtt');
const { Amqp, AmqpWs } = require('azure-iot-device-amqp');

const transports = { mqtt: Mqtt, mqttws: MqttWs, amqp: Amqp, amqpws: AmqpWs };

const cs = process.env.DEVICE_CS;
const transportName = (process.env.TRANSPORT || 'mqtt').toLowerCase();
const caFile = process.env.CA_FILE;
const methodName = process.env.METHOD || 'reboot';

if (!cs || !transports[transportName]) {
  console.error('usage: DEVICE_CS=... TRANSPORT=mqtt|mqttws|amqp|amqpws [CA_FILE=ca.pem] node device.js');
  process.exit(2);
}

function describe(err) {
  if (!err) return 'unknown error';
  let s = (err.name || 'Error') + ': ' + (err.message || String(err));
  if (err.innerError) s += ' (inner: ' + describe(err.innerError) + ')';
  if (err.amqpError) s += ' (amqp: ' + JSON.stringify(err.amqpError) + ')';
  return s;
}

// The transport's enableMethods() callback is the only place where the SDK tells us the
// method subscription is in place; onDeviceMethod() swallows it. Subclassing the transport
// constructor (a public parameter of Client.fromConnectionString) lets us print READY then.
function withReadyHook(Base) {
  return class extends Base {
    enableMethods(callback) {
      super.enableMethods((err, ...rest) => {
        if (err) {
          console.log('ERROR enabling methods: ' + describe(err));
        } else if (!this.__readyPrinted) {
          this.__readyPrinted = true;
          console.log('READY');
        }
        callback(err, ...rest);
      });
    }
  };
}

const noRetry = { shouldRetry: () => false, nextRetryTimeout: () => -1 };

const client = Client.fromConnectionString(cs, withReadyHook(transports[transportName]));
if (process.env.RETRY !== '1') client.setRetryPolicy(noRetry);

let exiting = false;
function shutdown(code) {
  if (exiting) return;
  exiting = true;
  client.close().catch(() => undefined).then(() => process.exit(code));
  setTimeout(() => process.exit(code), 3000).unref();
}

client.on('error', (err) => { console.log('ERROR ' + describe(err)); shutdown(1); });
client.on('disconnect', (evt) => {
  const reason = evt && evt.reason;
  console.log('DISCONNECTED' + (reason ? ' ' + describe(reason) : ''));
  shutdown(1);
});
process.on('SIGINT', () => shutdown(0));
process.on('SIGTERM', () => shutdown(0));

async function main() {
  // One setOptions call: a second one replaces the transport's TLS options.
  const options = {};
  if (caFile) {
    // azure-iot-device reads options.ca as a file path (falls back to treating it as PEM text).
    options.ca = caFile;
  }
  if (process.env.CERT_FILE) {
    const fs = require('fs');
    options.cert = fs.readFileSync(process.env.CERT_FILE, 'utf8');
    options.key = fs.readFileSync(process.env.KEY_FILE, 'utf8');
  }
  if (Object.keys(options).length > 0) await client.setOptions(options);
  console.log('CONNECTING transport=' + transportName);
  await client.open();
  console.log('CONNECTED');
  client.onDeviceMethod(methodName, (request, response) => {
    console.log('METHOD ' + request.methodName + ' ' + request.requestId + ' ' + JSON.stringify(request.payload === undefined ? null : request.payload));
    const body = { result: 'ok', payload: request.payload === undefined ? null : request.payload };
    setTimeout(() => {
      response.send(200, body, (err) => {
        if (err) console.log('ERROR sending method response: ' + describe(err));
        else console.log('RESPONDED 200 ' + JSON.stringify(body));
      });
    }, parseInt(process.env.DELAY_MS || '0', 10));
  });
}

main().catch((err) => {
  console.log('ERROR ' + describe(err));
  shutdown(1);
});
