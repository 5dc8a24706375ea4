'use strict';
// Query peer: the OFFICIAL azure-iothub Registry running IoT Hub queries (POST /devices/query)
// with Registry.createQuery(sql, pageSize) and paging through them.
//
//   SERVICE_CS   service connection string (required)
//   SITE         the tags.site of the twins query (required)
//   PAGE_SIZE    page size of the paged queries (default 2)
//   CA_FILE      optional PEM file trusted for the server certificate (re-executes
//                with NODE_EXTRA_CA_CERTS, the only way to pass a CA to azure-iothub)
//
// Steps, each recorded under its name in one JSON line printed at the end (exit 0), or
// {"error":…} (exit 1) when a step that should succeed fails. A page is
// {"items":[…],"hasMoreResults":…,"hasToken":…,"itemType":<x-ms-item-type>,"twinObjects":<all Twin instances>}.
//   twins       SELECT * FROM devices WHERE tags.site = SITE, PAGE_SIZE per page, nextAsTwin()
//               while hasMoreResults
//   resumed     the same query: one next() on a fresh Query, then a second fresh Query
//               resumed with next(<the first one's continuationToken>) until the end
//   projection  SELECT deviceId, tags.floor AS floor FROM devices WHERE tags.site = SITE,
//               one next() with the SDK's default page size
//   grouped     SELECT tags.site AS site, COUNT() AS n FROM devices GROUP BY tags.site, next()
//   refused     SELECT * FROM devices WHERE (no condition): the error of next()
//   badToken    the twins query, next('not-a-token'): the error

const { spawnSync } = require('child_process');

if (process.env.CA_FILE && process.env.NODE_EXTRA_CA_CERTS !== process.env.CA_FILE) {
  const r = spawnSync(process.execPath, process.argv.slice(1), {
    stdio: 'inherit',
    env: Object.assign({}, process.env, { NODE_EXTRA_CA_CERTS: process.env.CA_FILE })
  });
  process.exit(r.status === null ? 1 : r.status);
}

const { Registry, Twin } = require('azure-iothub');

const cs = process.env.SERVICE_CS;
const site = process.env.SITE;
const pageSize = parseInt(process.env.PAGE_SIZE || '2', 10);
if (!cs || !site) {
  console.error('usage: SERVICE_CS=... SITE=... [PAGE_SIZE=2] [CA_FILE=ca.pem] node query.js');
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

// page records one answer of next() or nextAsTwin() and the Query's state after it.
function page(q, res) {
  const items = res.result || [];
  return {
    items: JSON.parse(JSON.stringify(items)),
    hasMoreResults: q.hasMoreResults,
    hasToken: typeof q.continuationToken === 'string' && q.continuationToken.length > 0,
    itemType: res.message.headers['x-ms-item-type'],
    twinObjects: items.every((t) => t instanceof Twin)
  };
}

// all pages q through with nextAsTwin (twins) or next, at most 50 pages.
async function all(q, twins) {
  const pages = [];
  while (q.hasMoreResults && pages.length < 50) {
    pages.push(page(q, twins ? await q.nextAsTwin() : await q.next()));
  }
  return pages;
}

async function main() {
  const registry = Registry.fromConnectionString(cs);
  const twinsSQL = "SELECT * FROM devices WHERE tags.site = '" + site + "'";
  const res = {};
  res.twins = await all(registry.createQuery(twinsSQL, pageSize), true);

  const first = registry.createQuery(twinsSQL, pageSize);
  const firstPage = page(first, await first.next());
  const second = registry.createQuery(twinsSQL, pageSize);
  const rest = [page(second, await second.next(first.continuationToken))];
  rest.push(...await all(second, false));
  res.resumed = { first: firstPage, rest: rest };

  const proj = registry.createQuery("SELECT deviceId, tags.floor AS floor FROM devices WHERE tags.site = '" + site + "'");
  res.projection = page(proj, await proj.next());
  const grouped = registry.createQuery('SELECT tags.site AS site, COUNT() AS n FROM devices GROUP BY tags.site', 100);
  res.grouped = page(grouped, await grouped.next());

  res.refused = await failure(() => registry.createQuery('SELECT * FROM devices WHERE', 10).next());
  res.badToken = await failure(() => registry.createQuery(twinsSQL, pageSize).next('not-a-token'));
  console.log(JSON.stringify(res));
}

main().catch((err) => {
  console.log(JSON.stringify({ error: describe(err) }));
  process.exit(1);
});
