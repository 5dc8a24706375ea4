'use strict';
// Twin service peer: the OFFICIAL azure-iothub Registry reading and updating a device twin.
//
//   SERVICE_CS   service connection string (required)
//   DEVICE_ID    the twin's device (required; it must exist)
//   MISSING_ID   a device id that does not exist (default no-such-device)
//   CA_FILE      optional PEM file trusted for the server certificate (re-executes
//                with NODE_EXTRA_CA_CERTS, the only way to pass a CA to azure-iothub)
//
// Steps, each recorded under its name in one JSON line printed at the end (exit 0), or
// {"error":…} (exit 1) when a step that should succeed fails. Twins are printed with the
// SDK's Twin.toJSON(); expected failures as {"name":…,"statusCode":…,"message":…,"body":…}.
//   got        registry.getTwin(DEVICE_ID)
//   updated    got.update({tags:{site:"b-12",floor:2},properties:{desired:{setpoint:21,mode:{fan:"auto"}}}})
//              (the twin's own etag, from got)
//   stale      registry.updateTwin(DEVICE_ID, {properties:{desired:{setpoint:99}}}, got.etag):
//              got's etag is stale now
//   etagged    registry.updateTwin(DEVICE_ID, {tags:{floor:null},properties:{desired:{setpoint:22,mode:{fan:null}}}}, updated.etag)
//   forced     registry.updateTwin(DEVICE_ID, {properties:{desired:{mode:{light:"on"}}}}, '*')
//   missingGet     registry.getTwin(MISSING_ID)
//   missingUpdate  registry.updateTwin(MISSING_ID, {tags:{a:1}}, '*')
//   final      registry.getTwin(DEVICE_ID)

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
const missingId = process.env.MISSING_ID || 'no-such-device';
if (!cs || !deviceId) {
  console.error('usage: SERVICE_CS=... DEVICE_ID=... [MISSING_ID=...] [CA_FILE=ca.pem] node twin_service.js');
  process.exit(2);
}

function describe(err) {
  return {
    name: err.name,
    statusCode: err.response ? err.response.statusCode : undefined,
    message: err.message,
    body: err.responseBody
  };
}

// failure runs op, which must fail, and describes the error.
async function failure(op) {
  try {
    await op();
  } catch (err) {
    return describe(err);
  }
  return { name: 'NoError', message: 'the call succeeded' };
}

function plain(twin) {
  return JSON.parse(JSON.stringify(twin));
}

async function main() {
  const registry = Registry.fromConnectionString(cs);
  const res = {};
  const got = (await registry.getTwin(deviceId)).responseBody;
  res.got = plain(got);
  const staleEtag = got.etag;
  // Twin.update sends the twin's etag as If-Match and copies the answer into the twin.
  await got.update({ tags: { site: 'b-12', floor: 2 }, properties: { desired: { setpoint: 21, mode: { fan: 'auto' } } } });
  res.updated = plain(got);
  res.stale = await failure(() => registry.updateTwin(deviceId, { properties: { desired: { setpoint: 99 } } }, staleEtag));
  res.etagged = plain((await registry.updateTwin(deviceId,
    { tags: { floor: null }, properties: { desired: { setpoint: 22, mode: { fan: null } } } }, got.etag)).responseBody);
  res.forced = plain((await registry.updateTwin(deviceId, { properties: { desired: { mode: { light: 'on' } } } }, '*')).responseBody);
  res.missingGet = await failure(() => registry.getTwin(missingId));
  res.missingUpdate = await failure(() => registry.updateTwin(missingId, { tags: { a: 1 } }, '*'));
  res.final = plain((await registry.getTwin(deviceId)).responseBody);
  console.log(JSON.stringify(res));
}

main().catch((err) => {
  console.log(JSON.stringify({ error: describe(err) }));
  process.exit(1);
});
