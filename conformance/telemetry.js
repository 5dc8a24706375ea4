'use strict';
// Telemetry peer for protocol-fidelity tests: the OFFICIAL azure-iot-device SDK sending one
// device-to-cloud message.
//
//   DEVICE_CS   device connection string (required)
//   TRANSPORT   http | mqtt   (default mqtt)
//   CA_FILE     optional PEM file trusted for the server certificate. Passed as
//               client.setOptions({ ca }): azure-iot-device reads the file and hands the PEM
//               to the transport; azure-iot-http-base copies options.ca into every
//               https.request, and the MQTT transport into its TLS options, so no
//               NODE_EXTRA_CA_CERTS re-exec is needed (unlike invoke.js). See main() for
//               the HTTP transport's setOptions callback quirk.
//   BODY        message body text (default {"temp":21.5})
//   MESSAGE_ID, CORRELATION_ID   system properties (defaults m-1, c-1)
//   PROPS       JSON object of application properties, added in order with
//               message.properties.add (default {"alert":"true","site":"b-12"})
//
// The message always carries contentType application/json and contentEncoding utf-8.
// Prints "SENT" once the hub accepted the message (HTTP 204 / MQTT PUBACK) and exits 0,
// or "ERROR <description>" and exits 1. Exit 2 on bad usage.

const { Client, Message } = require('azure-iot-device');
const { Http } = require('azure-iot-device-http');
const { Mqtt } = require('azure-iot-device-mqtt');

const transports = { http: Http, mqtt: Mqtt };

const cs = process.env.DEVICE_CS;
const transportName = (process.env.TRANSPORT || 'mqtt').toLowerCase();
if (!cs || !transports[transportName]) {
  console.error('usage: DEVICE_CS=... TRANSPORT=http|mqtt [CA_FILE=ca.pem] [BODY=...] [PROPS={...}] node telemetry.js');
  process.exit(2);
}

function describe(err) {
  if (!err) return 'unknown error';
  let s = (err.name || 'Error') + ': ' + (err.message || String(err));
  if (err.response && err.response.statusCode) s += ' (HTTP ' + err.response.statusCode + ')';
  if (err.responseBody) s += ' body ' + err.responseBody;
  if (err.innerError) s += ' (inner: ' + describe(err.innerError) + ')';
  return s;
}

const noRetry = { shouldRetry: () => false, nextRetryTimeout: () => -1 };

async function main() {
  const client = Client.fromConnectionString(cs, transports[transportName]);
  client.setRetryPolicy(noRetry);
  client.on('error', (err) => { console.log('ERROR ' + describe(err)); process.exit(1); });
  try {
    if (process.env.CA_FILE) {
      const options = { ca: process.env.CA_FILE };
      if (transportName === 'http') {
        // azure-iot-device-http 1.14.4: Http.setOptions applies `ca` but calls back only when
        // receiver options are present, so the awaited promise would never settle (and node
        // would exit 0 silently). Passing the default C2D receive policy (the receiver is not
        // started) makes it call back.
        options.http = { receivePolicy: { interval: 1 } };
      }
      await client.setOptions(options);
    }
    await client.open();
    const message = new Message(process.env.BODY || '{"temp":21.5}');
    message.messageId = process.env.MESSAGE_ID || 'm-1';
    message.correlationId = process.env.CORRELATION_ID || 'c-1';
    message.contentType = 'application/json';
    message.contentEncoding = 'utf-8';
    const props = JSON.parse(process.env.PROPS || '{"alert":"true","site":"b-12"}');
    for (const k of Object.keys(props)) {
      message.properties.add(k, props[k]);
    }
    await client.sendEvent(message);
    console.log('SENT');
  } finally {
    await client.close().catch(() => undefined);
  }
}

main().then(() => process.exit(0), (err) => {
  console.log('ERROR ' + describe(err));
  process.exit(1);
});
