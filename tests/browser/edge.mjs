// A stream published to one node plays on another's page: two ovation nodes of one
// cluster (a shared PostgreSQL ledger and Redis bus); a broadcaster goes live on node
// 1's live page with the fake camera (WHIP), a viewer opens node 2's watch page and
// its video decodes frames (WHEP). Node 2 has no publisher for the room, so it is an
// edge: GET /api/admin/rtc shows it pulling the room from node 1, and node 1 serving
// that one edge and no viewer of its own. Screenshots of both pages go to $ARTIFACTS.
//
// Run by tests/browser.rs inside a network namespace that has only loopback, with
// OVATION_BIN (the server binary), CHROMIUM, ARTIFACTS, and the cluster's LEDGER (a
// PostgreSQL URL or conninfo), BUS (a Redis URL) and CLUSTER (its name on the bus).

import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { launchChromium, logPage, screenshotAll, signIn, startServer, stepper, waitForFrames } from './lib.mjs';

const step = stepper('edge');
const artifacts = process.env.ARTIFACTS || tmpdir();
mkdirSync(artifacts, { recursive: true });
for (const name of ['OVATION_BIN', 'LEDGER', 'BUS', 'CLUSTER']) {
  if (!process.env[name]) throw new Error(`${name} is not set`);
}

// The nodes sign each other's requests (the edge's pull) with the shared secret.
const secret = randomBytes(16).toString('hex');
const work = mkdtempSync(join(tmpdir(), 'ovation-edge-'));
// This test is about where a viewer's video comes from, not about placement: a
// debug build on a busy machine must not count as too loaded to keep its viewer
// (a full node redirects a WHEP viewer to another node).
const config = join(work, 'ovation.toml');
writeFileSync(config, '[rtc]\nmax_cpu_percent = 100\n');

/** Starts node `n` of the cluster. */
function node(n) {
  return startServer({
    name: `node ${n}`,
    args: [
      '--dev', '--token-secret', secret,
      '--data-dir', join(work, `data-${n}`),
      '--config', config,
      '--ledger', process.env.LEDGER,
      '--bus', process.env.BUS,
      '--cluster', process.env.CLUSTER,
    ],
  });
}

/** `GET /api/admin/rtc` on the node at `base`, with a dev admin token. */
async function rtcReport(base) {
  const minted = await fetch(`${base}/api/dev/token`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ user: 'ops', role: 'admin' }),
  });
  if (!minted.ok) throw new Error(`POST ${base}/api/dev/token: ${minted.status} ${await minted.text()}`);
  const { token } = await minted.json();
  const res = await fetch(`${base}/api/admin/rtc`, { headers: { Authorization: `Bearer ${token}` } });
  if (!res.ok) throw new Error(`GET ${base}/api/admin/rtc: ${res.status} ${await res.text()}`);
  return res.json();
}

const nodes = [];
let browser;
let failed = false;
try {
  // One after the other: the first creates the ledger's tables in the fresh schema.
  nodes.push(await node(1));
  nodes.push(await node(2));
  const [origin, edge] = nodes.map((n) => n.url);
  step(`node 1 at ${origin}, node 2 at ${edge}`);

  browser = await launchChromium();
  const phone = await browser.newContext({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true });
  await phone.grantPermissions(['camera', 'microphone'], { origin });
  const desktop = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const live = await phone.newPage();
  const watch = await desktop.newPage();
  logPage('live', live);
  logPage('watch', watch);
  const whep = [];
  watch.on('response', (r) => {
    if (r.request().method() === 'POST' && new URL(r.url()).pathname.startsWith('/whep/')) whep.push(`${r.status()} ${r.url()}`);
  });

  step('broadcaster signs in on node 1 and goes live with the fake camera');
  await signIn(live, origin, 'Alice', 'broadcaster');
  await live.goto(`${origin}/live.html`);
  await live.click('#go-live');
  await live.waitForFunction(() => window.ovation.pc && window.ovation.pc.connectionState === 'connected', null, { timeout: 20000 });

  step('viewer signs in on node 2 and plays the stream');
  await signIn(watch, edge, 'Bob', 'viewer');
  await watch.goto(`${edge}/watch.html?room=alice`);
  const frames = await waitForFrames(watch, 'main', 30);
  step(`viewer decoded ${frames} frames`);
  const size = await watch.evaluate(() => [document.getElementById('video').videoWidth, document.getElementById('video').videoHeight]);
  if (!(size[0] > 0 && size[1] > 0)) throw new Error(`the video element shows no picture: ${size}`);
  if (!whep.length || !whep.every((r) => r.startsWith(`201 ${edge}/whep/alice`))) {
    throw new Error(`the viewer's WHEP requests were not all answered by node 2: ${JSON.stringify(whep)}`);
  }

  step('node 2 pulls the room from node 1, which serves that one edge');
  const pulling = await rtcReport(edge);
  const serving = await rtcReport(origin);
  const pulls = pulling.pulls || [];
  if (pulls.length !== 1 || pulls[0].room !== 'alice' || pulls[0].origin !== origin) {
    throw new Error(`node 2 does not pull alice from ${origin}: ${JSON.stringify(pulling)}`);
  }
  if (pulling.viewers_pulled !== 1 || pulling.publishers !== 0) {
    throw new Error(`node 2 should serve one pulled viewer and no publisher: ${JSON.stringify(pulling)}`);
  }
  const edges = serving.edges || [];
  if (edges.length !== 1 || edges[0].room !== 'alice') {
    throw new Error(`node 1 does not serve one edge for alice: ${JSON.stringify(serving)}`);
  }
  if (serving.publishers !== 1 || serving.viewers_local !== 0 || (serving.pulls || []).length !== 0) {
    throw new Error(`node 1 should hold the publisher and no viewer of its own: ${JSON.stringify(serving)}`);
  }

  await watch.screenshot({ path: join(artifacts, 'edge-viewer.png'), fullPage: true });
  await live.screenshot({ path: join(artifacts, 'edge-broadcaster.png'), fullPage: true });
  step(`screenshots in ${artifacts}`);
} catch (error) {
  failed = true;
  console.error(`[edge] FAILED: ${error.stack || error}`);
  if (browser) await screenshotAll(browser, artifacts, 'edge-failure');
} finally {
  if (browser) await browser.close();
  // The edge first, so that the origin sees its pull end rather than cut.
  for (const n of nodes.reverse()) await n.stop();
}
process.exit(failed ? 1 : 0);
