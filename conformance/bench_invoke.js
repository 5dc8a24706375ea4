'use strict';
// Invoker for `iothub bench`: the OFFICIAL azure-iothub service client invoking direct
// methods in a loop, so that Node's start-up is not measured.
//
//   SERVICE_CS           service connection string, HostName=localhost (port 443 is fixed)
//   NODE_EXTRA_CA_CERTS  the hub's CA (the service client has no public `ca` option)
//   stdin: one JSON line {devices: [...], method, payload, concurrency, warmup_ms, duration_ms,
//          start_at_unix_ms (optional: when the warm-up starts, so that two invokers share a window)}
//
// `concurrency` loops each make one call at a time, to devices round-robin, for
// warmup_ms + duration_ms. Calls that end inside the measured window count.
// stdout: {"type":"window_start"} when the window opens, then
//   {"type":"result", errors, first_error, seconds, latencies_us: [...], cpu_seconds}
// where cpu_seconds is this process's CPU time inside the window.

const readline = require('readline');
const { Client } = require('azure-iothub');

function out(obj) { process.stdout.write(JSON.stringify(obj) + '\n'); }

function describe(err) {
  if (!err) return 'unknown error';
  return (err.name || 'Error') + ': ' + (err.message || String(err));
}

async function main(spec) {
  const client = Client.fromConnectionString(process.env.SERVICE_CS);
  client.setRetryPolicy({ shouldRetry: () => false, nextRetryTimeout: () => -1 });
  const params = { methodName: spec.method, payload: spec.payload, responseTimeoutInSeconds: 30 };
  const call = (id) => new Promise((resolve, reject) => {
    client.invokeDeviceMethod(id, params, (err, result) => {
      if (err) return reject(err);
      if (!result || result.status !== 200) return reject(new Error('device answered ' + JSON.stringify(result)));
      resolve();
    });
  });

  if (spec.start_at_unix_ms) {
    await new Promise((r) => setTimeout(r, Math.max(0, spec.start_at_unix_ms - Date.now())));
  }
  const now = () => Number(process.hrtime.bigint()) / 1e3; // µs
  const start = now();
  const ws = start + spec.warmup_ms * 1e3;
  const we = ws + spec.duration_ms * 1e3;
  const lat = [];
  let errors = 0;
  let firstError = '';
  let next = 0;
  let cpu0 = null;
  const opener = setTimeout(() => { cpu0 = process.cpuUsage(); out({ type: 'window_start' }); }, spec.warmup_ms);

  async function worker() {
    for (;;) {
      const t0 = now();
      if (t0 > we) return;
      const id = spec.devices[next++ % spec.devices.length];
      let err = null;
      try { await call(id); } catch (e) { err = e; }
      const t1 = now();
      if (t1 < ws || t1 > we) continue;
      if (err) {
        errors++;
        if (!firstError) firstError = describe(err);
        continue;
      }
      lat.push(t1 - t0);
    }
  }
  const workers = [];
  for (let i = 0; i < Math.max(1, spec.concurrency); i++) workers.push(worker());
  await new Promise((r) => setTimeout(r, Math.max(0, (we - now()) / 1e3)));
  const cpu = process.cpuUsage(cpu0 || undefined);
  await Promise.all(workers);
  clearTimeout(opener);
  const result = JSON.stringify({ type: 'result', errors, first_error: firstError, seconds: spec.duration_ms / 1e3,
    latencies_us: lat.map((l) => Math.round(l * 10) / 10), cpu_seconds: (cpu.user + cpu.system) / 1e6 });
  // Writes to a pipe are asynchronous: exit once the line is out.
  process.stdout.write(result + '\n', () => process.exit(0));
}

const rl = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
rl.once('line', (line) => {
  rl.close();
  main(JSON.parse(line)).catch((err) => {
    console.error(describe(err));
    process.exit(1);
  });
});
