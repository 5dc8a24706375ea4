'use strict';
// Registry peer: the OFFICIAL azure-iothub Registry creating and reading a device,
// creating two more in one bulk request, and reading the registry statistics.
//
//   SERVICE_CS   service connection string (required)
//   DEVICE_ID    id of the device to create (required)
//   CA_FILE      optional PEM file trusted for the server certificate (re-executes
//                with NODE_EXTRA_CA_CERTS, the only way to pass a CA to azure-iothub)
//
// Prints one JSON line {"created":<device>,"got":<device>,"duplicate":<error>,"bulk":<bulk result>,
// "bulkGot":<device>,"stats":<registry statistics>}
// (exit 0), or {"error":…} (exit 1).

const { spawnSync } = require('child_process');

if (process.env.CA_FILE && process.env.NODE_EXTRA_CA_CERTS !== process.env.CA_FILE) {
  const r = spawnSync(process.execPath, process.argv.slice(1), {
    stdio: 'inherit',
    env: Object.assign({}, process.env, { NODE_EXTRA_CA_CERTS: process.env.CA_FILE })
  });
  process.exit(r.status === null ? 1 : r.status);
}

const { Registry } = require('azure-iothub');

const cs = process.env.SERVICE_CS;
const deviceId = process.env.DEVICE_ID;
if (!cs || !deviceId) {
  console.error('usage: SERVICE_CS=... DEVICE_ID=... [CA_FILE=ca.pem] node registry.js');
  process.exit(2);
}

function fail(err) {
  console.log(JSON.stringify({
    error: {
      name: err.name,
      message: err.message,
      statusCode: err.response ? err.response.statusCode : undefined,
      responseBody: err.responseBody
    }
  }));
  process.exit(1);
}

async function main() {
  const registry = Registry.fromConnectionString(cs);
  const created = await registry.create({ deviceId: deviceId });
  const got = await registry.get(deviceId);
  let duplicate = null;
  try {
    await registry.create({ deviceId: deviceId });
  } catch (err) {
    duplicate = { name: err.name, statusCode: err.response ? err.response.statusCode : undefined };
  }
  const bulk = await registry.addDevices([{ deviceId: deviceId + '-bulk1' }, { deviceId: deviceId + '-bulk2', status: 'disabled' }]);
  const bulkGot = await registry.get(deviceId + '-bulk2');
  const stats = await registry.getRegistryStatistics();
  console.log(JSON.stringify({ created: created.responseBody, got: got.responseBody, duplicate: duplicate,
    bulk: bulk.responseBody, bulkGot: bulkGot.responseBody, stats: stats.responseBody }));
}

main().catch(fail);
