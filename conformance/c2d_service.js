'use strict';
// Service peer for cloud-to-device messages: the OFFICIAL azure-iothub Client sending a
// message and reading its feedback.
//
//   SERVICE_CS   service connection string (required)
//   DEVICE_ID    the device (required)
//   MESSAGE_ID   the message id (required)
//   ACK          none | positive | negative | full   (default full)
//   WAIT_MS      how long to wait for the feedback record (default 20000; 0: do not wait)
//   CA_FILE      optional PEM file trusted for the server certificate (re-executes with
//                NODE_EXTRA_CA_CERTS)
//
// Prints one JSON line at the end: {"sent":true,"feedback":<the record for MESSAGE_ID or
// null>} (exit 0), or {"error":{…}} (exit 1) when the send or the receiver failed.

const { spawnSync } = require('child_process');
if (process.env.CA_FILE && process.env.NODE_EXTRA_CA_CERTS !== process.env.CA_FILE) {
  const r = spawnSync(process.execPath, process.argv.slice(1), {
    stdio: 'inherit',
    env: Object.assign({}, process.env, { NODE_EXTRA_CA_CERTS: process.env.CA_FILE })
  });
  process.exit(r.status === null ? 1 : r.status);
}

const { Client } = require('azure-iothub');
const { Message } = require('azure-iot-common');

const cs = process.env.SERVICE_CS;
const deviceId = process.env.DEVICE_ID;
const messageId = process.env.MESSAGE_ID;
if (!cs || !deviceId || !messageId) {
  console.error('usage: SERVICE_CS=... DEVICE_ID=... MESSAGE_ID=... node c2d_service.js');
  process.exit(2);
}
const waitMs = parseInt(process.env.WAIT_MS || '20000', 10);

function describe(err) {
  return { name: err.name, message: err.message, transportError: err.transportError ? String(err.transportError) : undefined };
}

async function main() {
  const client = Client.fromConnectionString(cs);
  await client.open();
  let resolveRecord;
  const record = new Promise((resolve) => { resolveRecord = resolve; });
  if (waitMs > 0) {
    const receiver = (await client.getFeedbackReceiver()).result; // { result, message }
    receiver.on('message', (msg) => {
      const records = JSON.parse(msg.getData().toString());
      for (const r of records) {
        if (r.originalMessageId === messageId) resolveRecord(r);
      }
    });
  }
  const m = new Message('{"command":"firmwareUpdate","from":"node"}');
  m.messageId = messageId;
  m.correlationId = 'corr-' + messageId;
  m.ack = process.env.ACK || 'full';
  m.properties.add('kind', 'firmware');
  await client.send(deviceId, m);
  let fb = null;
  if (waitMs > 0) {
    fb = await Promise.race([record, new Promise((resolve) => setTimeout(() => resolve(null), waitMs))]);
  }
  console.log(JSON.stringify({ sent: true, feedback: fb }));
  await client.close();
}

main().then(() => process.exit(0)).catch((err) => {
  console.log(JSON.stringify({ error: describe(err) }));
  process.exit(1);
});
