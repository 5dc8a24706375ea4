'use strict';
// Registry fidelity peer: the OFFICIAL azure-iothub Registry against the hub's registry
// errors and IoT Edge device scopes (issue 15, points 2 and 3).
//
//   SERVICE_CS   service connection string (required)
//   PREFIX       prefix of the device ids it creates (required)
//   CA_FILE      optional PEM file trusted for the server certificate (re-executes
//                with NODE_EXTRA_CA_CERTS, the only way to pass a CA to azure-iothub)
//
// Prints one JSON line of results (exit 0), or {"error":…} (exit 1). Each expected
// failure is recorded as {"name":…,"statusCode":…,"message":…}.

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
const prefix = process.env.PREFIX;
if (!cs || !prefix) {
  console.error('usage: SERVICE_CS=... PREFIX=... [CA_FILE=ca.pem] node registry_fidelity.js');
  process.exit(2);
}

function describe(err) {
  return { name: err.name, statusCode: err.response ? err.response.statusCode : undefined, message: err.message };
}

// failure runs op, which must fail, and describes the error.
async function failure(op) {
  try {
    await op();
  } catch (err) {
    return describe(err);
  }
  return { name: 'NoError' };
}

async function main() {
  const registry = Registry.fromConnectionString(cs);
  const out = {};
  out.getMissing = await failure(() => registry.get(prefix + '-missing'));
  out.deleteMissing = await failure(() => registry.delete(prefix + '-missing'));
  out.getMissingModule = await failure(() => registry.getModule(prefix + '-missing', 'm1'));

  const edge = (await registry.create({ deviceId: prefix + '-edge', capabilities: { iotEdge: true } })).responseBody;
  out.edge = { deviceScope: edge.deviceScope, parentScopes: edge.parentScopes, generationId: edge.generationId };
  const leaf = (await registry.create({ deviceId: prefix + '-leaf', deviceScope: edge.deviceScope })).responseBody;
  out.leaf = { deviceScope: leaf.deviceScope, parentScopes: leaf.parentScopes };
  const child = (await registry.create({ deviceId: prefix + '-child', capabilities: { iotEdge: true },
    parentScopes: [edge.deviceScope] })).responseBody;
  out.child = { deviceScope: child.deviceScope, parentScopes: child.parentScopes, generationId: child.generationId };
  out.unknownScope = await failure(() => registry.create({ deviceId: prefix + '-orphan',
    deviceScope: 'ms-azure-iot-edge://nobody-637000000000000000' }));
  // The official SDK's own e2e test: a leaf must not move to a scope that belongs to no edge.
  leaf.deviceScope = 'ms-azure-iot-edge://' + prefix + '-random-1';
  out.leafToUnknownScope = await failure(() => registry.update(leaf));
  const plain = (await registry.create({ deviceId: prefix + '-plain' })).responseBody;
  out.plain = { deviceScope: plain.deviceScope === undefined ? 'absent' : plain.deviceScope, parentScopes: plain.parentScopes };
  console.log(JSON.stringify(out));
}

main().catch((err) => {
  console.log(JSON.stringify({ error: describe(err) }));
  process.exit(1);
});
