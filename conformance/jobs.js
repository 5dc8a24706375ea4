'use strict';
// Jobs service peer: the OFFICIAL azure-iothub JobClient (and Registry queries of
// devices.jobs) against the hub.
//
//   SERVICE_CS   service connection string (required)
//   CA_FILE      optional PEM file trusted for the server certificate (re-executes
//                with NODE_EXTRA_CA_CERTS, the only way to pass a CA to azure-iothub)
//
// The hub must hold jd1 (online, answering "reboot" with 200 and its payload), jd2
// (offline) and jd3. Steps, each recorded under its name in one JSON line printed at the
// end (exit 0), or {"error":…} (exit 1) when a step that should succeed fails. Expected
// failures are recorded as {"name":…,"statusCode":…,"message":…,"body":…}.
//   method      scheduleDeviceMethod('node-m1', "deviceId IN ['jd1','jd2']", reboot {n:1}),
//               no start time (null: now); the scheduling answer
//   methodDone  getJob('node-m1') polled until the job ends
//   deviceJobs  Registry.createQuery("SELECT * FROM devices.jobs WHERE devices.jobs.jobId = 'node-m1'").next()
//   noEtag      scheduleTwinUpdate('node-t0', "deviceId = 'jd3'", {tags:{ring:1}}, now): no etag
//   twin        scheduleTwinUpdate('node-t1', "deviceId = 'jd3'", {etag:'*',tags:{ring:2},properties:{desired:{fw:'2.0'}}}, now)
//   twinDone    getJob('node-t1') polled until the job ends
//   jd3         registry.getTwin('jd3') afterwards
//   later       scheduleDeviceMethod('node-later', "deviceId = 'jd1'", …, in an hour, 600 s)
//   cancelled   cancelJob('node-later')
//   listed      JobClient.createQuery('scheduleDeviceMethod', null, 1): every page's job ids,
//               and the number of pages
//   missing     getJob('no-such-job')
//   badQuery    scheduleDeviceMethod('node-bad', 'deviceId =', …)
//   duplicate   scheduleDeviceMethod('node-m1', …) again

const { spawnSync } = require('child_process');

if (process.env.CA_FILE && process.env.NODE_EXTRA_CA_CERTS !== process.env.CA_FILE) {
  const r = spawnSync(process.execPath, process.argv.slice(1), {
    stdio: 'inherit',
    env: Object.assign({}, process.env, { NODE_EXTRA_CA_CERTS: process.env.CA_FILE })
  });
  process.exit(r.status === null ? 1 : r.status);
}

const { JobClient, Registry } = require('azure-iothub');

const cs = process.env.SERVICE_CS;
if (!cs) {
  console.error('usage: SERVICE_CS=... [CA_FILE=ca.pem] node jobs.js');
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

async function failure(op) {
  try {
    await op();
  } catch (err) {
    return describe(err);
  }
  return { name: 'NoError', message: 'the call succeeded' };
}

function plain(v) {
  return JSON.parse(JSON.stringify(v));
}

async function waitJob(jobs, id) {
  for (let i = 0; i < 600; i++) {
    const job = (await jobs.getJob(id)).jobStatus;
    if (['completed', 'failed', 'cancelled'].includes(job.status)) {
      return job;
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error('job ' + id + ' did not end within 30 s');
}

async function main() {
  const jobs = JobClient.fromConnectionString(cs);
  const registry = Registry.fromConnectionString(cs);
  const reboot = { methodName: 'reboot', payload: { n: 1 }, responseTimeoutInSeconds: 10 };
  const res = {};
  res.method = plain((await jobs.scheduleDeviceMethod('node-m1', "deviceId IN ['jd1','jd2']", reboot)).jobStatus);
  res.methodDone = plain(await waitJob(jobs, 'node-m1'));
  const q = registry.createQuery("SELECT * FROM devices.jobs WHERE devices.jobs.jobId = 'node-m1'");
  res.deviceJobs = plain((await q.next()).result);

  // The patch carries etag '*', as the SDK's samples write it: IoT Hub refuses a twin
  // update job without it (noEtag).
  res.noEtag = await failure(() => jobs.scheduleTwinUpdate('node-t0', "deviceId = 'jd3'",
    { tags: { ring: 1 } }, new Date()));
  res.twin = plain((await jobs.scheduleTwinUpdate('node-t1', "deviceId = 'jd3'",
    { etag: '*', tags: { ring: 2 }, properties: { desired: { fw: '2.0' } } }, new Date())).jobStatus);
  res.twinDone = plain(await waitJob(jobs, 'node-t1'));
  res.jd3 = plain((await registry.getTwin('jd3')).responseBody);

  res.later = plain((await jobs.scheduleDeviceMethod('node-later', "deviceId = 'jd1'", reboot,
    new Date(Date.now() + 3600 * 1000), 600)).jobStatus);
  res.cancelled = plain((await jobs.cancelJob('node-later')).jobStatus);

  const listQuery = jobs.createQuery('scheduleDeviceMethod', null, 1);
  res.listed = { ids: [], pages: 0 };
  do {
    // next() without arguments sends no continuation token (the SDK reads an absent
    // argument as "no token"), so pass the Query's own token.
    const page = (await listQuery.next(listQuery.continuationToken)).result;
    res.listed.pages++;
    for (const j of page) {
      res.listed.ids.push(j.jobId);
    }
  } while (listQuery.hasMoreResults && res.listed.pages < 20);

  res.missing = await failure(() => jobs.getJob('no-such-job'));
  res.badQuery = await failure(() => jobs.scheduleDeviceMethod('node-bad', 'deviceId =', reboot));
  res.duplicate = await failure(() => jobs.scheduleDeviceMethod('node-m1', "deviceId = 'jd1'", reboot));
  console.log(JSON.stringify(res));
}

main().catch((err) => {
  console.log(JSON.stringify({ error: describe(err) }));
  process.exit(1);
});
