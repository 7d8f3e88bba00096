// What a TypeScript service with six LanceDB tables does once it talks to `dualvec serve`:
// built-in fetch only, no npm packages. One round of writes and reads per run:
//
//   node app.mjs BASE_URL ROUND
//
// Upserts 12 records to every collection (odd ones as vector_b64: base64 of little-endian
// float32), deletes two of them (POST /delete and DELETE /records/{id}), searches with a filter,
// gets the round's ids and counts. It checks what it can know on its own and exits 1 on the first
// surprise; it prints one JSON document for the test to check the rest against the library.
import assert from "node:assert/strict";

const [base, roundArg] = process.argv.slice(2);
const round = Number(roundArg);
const LANGS = ["ts", "go", "py"];
const PER_ROUND = 12;

async function call(method, path, body) {
  const response = await fetch(base + path, {
    method,
    headers: body === undefined ? {} : { "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const answer = await response.json();
  if (!response.ok) {
    throw new Error(`${method} ${path} -> ${response.status} ${JSON.stringify(answer)}`);
  }
  return answer;
}

// A small deterministic generator (mulberry32), so a rerun writes the same vectors.
function random(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function vectorFor(seed, dim) {
  const next = random(seed);
  return Float32Array.from({ length: dim }, () => next() * 2 - 1);
}

function b64(vector) {
  // Float32Array is little-endian on every platform Node runs on; say so explicitly anyway.
  const bytes = Buffer.alloc(vector.length * 4);
  vector.forEach((x, i) => bytes.writeFloatLE(x, i * 4));
  return bytes.toString("base64");
}

const { collections } = await call("GET", "/collections");
const names = Object.keys(collections).sort();
assert.deepEqual(names, ["code_nodes", "commits", "directories", "files", "pull_requests", "test_nodes"]);

const out = { round, collections: {} };
for (const [c, name] of names.entries()) {
  const { dim } = collections[name];
  const written = [];
  for (let i = 0; i < PER_ROUND; i++) {
    const vector = vectorFor(10000 * c + 100 * round + i, dim);
    written.push({ id: `${name}-${round}-${i}`, vector, metadata: { lang: LANGS[i % 3], round } });
  }
  const wire = written.map(({ id, vector, metadata }, i) =>
    i % 2 ? { id, vector_b64: b64(vector), metadata } : { id, vector: Array.from(vector), metadata },
  );
  assert.deepEqual(await call("POST", `/collections/${name}/records`, { records: wire }), {
    upserted: PER_ROUND,
  });

  // The record the search starts from: a "ts" one, sent as vector_b64.
  const probe = written[3];
  const filter = { lang: "ts" };
  const search = await call("POST", `/collections/${name}/search`, {
    vector_b64: b64(probe.vector),
    k: 5,
    filter,
  });
  assert.equal(search.hits[0].id, probe.id);
  assert.equal(search.hits[0].distance, 0);
  assert.deepEqual(search.hits[0].metadata, probe.metadata);
  for (const hit of search.hits) assert.equal(hit.metadata.lang, "ts", JSON.stringify(hit));

  const deleted = [written[0].id, written[1].id];
  assert.deepEqual(await call("POST", `/collections/${name}/delete`, { ids: [deleted[0]] }), { deleted: 1 });
  assert.deepEqual(
    await call("DELETE", `/collections/${name}/records/${encodeURIComponent(deleted[1])}`),
    { deleted: 1 },
  );

  const got = await call("POST", `/collections/${name}/get`, { ids: written.map((r) => r.id) });
  assert.deepEqual(
    got.records.map((r) => r.id),
    written.slice(2).map((r) => r.id),
  );
  for (const [i, record] of got.records.entries()) {
    const sent = written[i + 2];
    assert.deepEqual(record.metadata, sent.metadata);
    // Answers give each stored float32 exactly: fround of the number is the float sent.
    assert.deepEqual(Float32Array.from(record.vector), sent.vector, record.id);
  }

  const { count } = await call("GET", `/collections/${name}/count`);
  // A search after the deletes: what the test checks against the library's distances.
  const after = await call("POST", `/collections/${name}/search`, { vector: Array.from(probe.vector), k: 5, filter });
  assert.ok(!after.hits.some((hit) => deleted.includes(hit.id)), JSON.stringify(after.hits));
  out.collections[name] = {
    written: written.map(({ id, vector, metadata }) => ({ id, vector: Array.from(vector), metadata })),
    deleted,
    search: { vector: Array.from(probe.vector), k: 5, filter, hits: after.hits },
    count,
  };
}
process.stdout.write(JSON.stringify(out));
