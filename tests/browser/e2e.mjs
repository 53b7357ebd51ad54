// The whole product in headless Chromium: a broadcaster page goes live with the
// fake camera over WHIP, a viewer page plays it over WHEP (frames decoded, read from
// getStats), tops up, buys a coin pack in the simulated store (a signed
// notification through the real payment route), sends a sticker, sets a daily
// limit that stops the next one, the broadcaster taps thank-you, and the
// viewer sees the acknowledgement; then the broadcaster cashes out the gift's
// earnings (no hold period in this test's config) and downloads the CSV statement.
// Then moderation: a third page (Mo) chats, the broadcaster appoints Mo moderator
// on the live page's panel, the viewer chats, Mo deletes that message from its "⋯"
// menu and it leaves every page, the broadcaster's audit log shows the delete; slow
// mode set on the panel shows on the viewer's page; Mo times the viewer out, whose
// next chat is refused with the server's message, and the broadcaster lifts it.
// Then the stream overlay (an OBS browser source): its URL from the live page's
// "Stream overlay" section opens a transparent page that joins the room; the same
// page with a wrong key, or none, stays locked and opens no connection; the viewer's
// sticker shows as a gift alert on the overlay (and never on the locked ones); the
// live page's Test alert and Replay last alert show on it; rotating the key locks
// the old URL and the new one works.
// Then likes: the viewer taps the heart 5 times; Mo's page shows floating hearts and
// every page's total reaches 5. Then a PK battle: two more broadcasters (pk-a, pk-b) go
// live; A's invite to a room that is not live shows the server's refusal; A invites
// pk-b for 10 s from the live page's PK panel, B accepts on its page; a viewer of pk-a
// sees both videos play side by side (the opponent's muted), sends a sticker and
// pk-a's score rises on every page; at the end every page shows pk-a as the winner,
// GET /api/pk/{pk} agrees, and the viewer is back to one video.
// Screenshots of the pages go to $ARTIFACTS.
//
// Run by tests/browser.rs inside a network namespace that has only loopback, with
// OVATION_BIN (the server binary), CHROMIUM and ARTIFACTS set.

import { mkdtempSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  framesDecoded, launchChromium, logPage, screenshotAll, signIn as signInAt, startServer, stepper, videoPlays, waitForFrames,
} from './lib.mjs';

const PORT = 18080;
const BASE = `http://127.0.0.1:${PORT}`;
const artifacts = process.env.ARTIFACTS || tmpdir();
mkdirSync(artifacts, { recursive: true });
const step = stepper('e2e');
const signIn = (page, name, role) => signInAt(page, BASE, name, role);

// Earnings are available at once (no hold) and a payout may be as small as 1 coin,
// so the viewer's gift can be cashed out within the test.
const work = mkdtempSync(join(tmpdir(), 'ovation-e2e-'));
const config = join(work, 'ovation.toml');
writeFileSync(config, '[payouts]\nhold_days = 0\nmin_amount = 100\n');

let server;
let browser;
let failed = false;
try {
  server = await startServer({
    listen: `127.0.0.1:${PORT}`,
    args: ['--data-dir', join(work, 'data'), '--config', config],
  });
  browser = await launchChromium();
  const phone = await browser.newContext({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true });
  const desktop = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  for (const context of [phone, desktop]) {
    await context.grantPermissions(['camera', 'microphone'], { origin: BASE });
  }
  const live = await phone.newPage();
  const watch = await desktop.newPage();
  logPage('live', live);
  logPage('watch', watch);

  step('broadcaster signs in and goes live with the fake camera');
  await signIn(live, 'Alice', 'broadcaster');
  await live.goto(`${BASE}/live.html`);
  await live.click('#go-live');
  await live.waitForFunction(() => window.ovation.pc && window.ovation.pc.connectionState === 'connected', null, { timeout: 20000 });

  step('viewer signs in and plays the stream');
  await signIn(watch, 'Bob', 'viewer');
  await watch.goto(`${BASE}/watch.html?room=alice`);
  const deadline = Date.now() + 30000;
  let frames = 0;
  while ((frames = await framesDecoded(watch)) <= 30) {
    if (Date.now() > deadline) throw new Error(`only ${frames} video frames decoded in 30 s`);
    await new Promise((r) => setTimeout(r, 250));
  }
  step(`viewer decoded ${frames} frames`);
  const size = await watch.evaluate(() => [document.getElementById('video').videoWidth, document.getElementById('video').videoHeight]);
  if (!(size[0] > 0 && size[1] > 0)) throw new Error(`the video element shows no picture: ${size}`);

  step('viewer tops up, buys a pack in the simulated store and sends a sticker');
  await watch.click('#topup');
  await watch.waitForFunction(() => Number(document.getElementById('balance').dataset.coins) > 0);
  const toppedUp = await watch.evaluate(() => Number(document.getElementById('balance').dataset.coins));
  await watch.click('#buy');
  await watch.locator('#packs button').first().click();
  await watch.waitForFunction((b) => Number(document.getElementById('balance').dataset.coins) === b + 100, toppedUp);
  const before = await watch.evaluate(() => Number(document.getElementById('balance').dataset.coins));
  await watch.click('.sticker[data-id="rose"]');
  await watch.waitForFunction((b) => Number(document.getElementById('balance').dataset.coins) < b, before);

  step('viewer sees today’s spending, sets a daily limit at it, and the next gift is refused');
  await watch.waitForFunction(() => Number(document.getElementById('spent-today').textContent.replace(/\D/g, '')) > 0);
  const spent = await watch.evaluate(() => Number(document.getElementById('spent-today').textContent.replace(/\D/g, '')));
  await watch.click('#spending summary');
  await watch.fill('#daily-coins', String(spent));
  await watch.click('#limits button[type="submit"]');
  await watch.waitForFunction(() => !document.getElementById('cap-reached').hidden);
  const capped = await watch.evaluate(() => Number(document.getElementById('balance').dataset.coins));
  await watch.click('.sticker[data-id="rose"]');
  await watch.locator('.toast-error', { hasText: 'a day' }).first().waitFor({ timeout: 10000 });
  const after = await watch.evaluate(() => Number(document.getElementById('balance').dataset.coins));
  if (after !== capped) throw new Error(`a gift over the daily limit was charged: ${capped} -> ${after}`);
  await watch.click('#limits-clear');
  await watch.waitForFunction(() => document.getElementById('cap-reached').hidden);

  step('broadcaster sees the gift and taps thank-you');
  const item = live.locator('.feed-item', { hasText: 'Bob' }).first();
  await item.waitFor({ timeout: 10000 });
  await item.locator('.thank').click();

  step('viewer sees the acknowledgement; the broadcaster sees earnings, viewers and their own wallet');
  await watch.locator('.ack', { hasText: 'Bob' }).first().waitFor({ timeout: 10000 });
  await live.waitForFunction(() => Number(document.getElementById('earnings').dataset.minor) > 0, null, { timeout: 10000 });
  await live.waitForFunction(() => Number(document.getElementById('viewers').textContent) >= 2, null, { timeout: 10000 });
  await live.waitForFunction(() => !document.getElementById('wallet-panel').hidden && document.getElementById('spent-today').textContent === '0', null, { timeout: 10000 });

  step('broadcaster sees the gift’s earnings available and cashes them out');
  const minor = (id) => live.evaluate((i) => Number(document.getElementById(i).dataset.minor), id);
  await live.waitForFunction(() => !document.getElementById('earnings-panel').hidden
    && Number(document.getElementById('earn-available').dataset.minor) > 0, null, { timeout: 10000 });
  const available = await minor('earn-available');
  const pendingBefore = await minor('earn-pending');
  if (pendingBefore !== 0) throw new Error(`pending before any payout: ${pendingBefore}`);
  const shown = await live.textContent('#earn-available');
  if (shown !== (available / 100).toFixed(2)) throw new Error(`available ${available} shown as ${shown}`);
  await live.click('#cash-out');
  await live.locator('.toast-success', { hasText: 'Cash-out' }).first().waitFor({ timeout: 10000 });
  await live.waitForFunction((a) => Number(document.getElementById('earn-pending').dataset.minor) === a
    && Number(document.getElementById('earn-available').dataset.minor) === 0, available, { timeout: 10000 });
  if (!(await live.isDisabled('#cash-out'))) throw new Error('Cash out is enabled with nothing available');
  const payout = live.locator('#payouts-list li', { hasText: 'Pending' }).first();
  await payout.waitFor({ timeout: 10000 });
  const payoutMinor = Number(await payout.getAttribute('data-minor'));
  if (payoutMinor !== available) throw new Error(`the payout listed is ${payoutMinor}, not ${available}`);
  step(`cashed out ${(available / 100).toFixed(2)} coins; the payout is pending`);

  step('broadcaster downloads the statement as CSV');
  const [download] = await Promise.all([live.waitForEvent('download', { timeout: 10000 }), live.click('#statement-link')]);
  const name = download.suggestedFilename();
  if (!/^statement-\d{4}-\d{2}-\d{2}-\d{4}-\d{2}-\d{2}\.csv$/.test(name)) throw new Error(`statement file named ${name}`);
  const csv = readFileSync(await download.path(), 'utf8');
  const lines = csv.trim().split(/\r?\n/);
  const header = 'date,kind,reference,room,sender,coins,app_store,broadcaster,agency,platform,net';
  if (lines[0] !== header) throw new Error(`the statement's header is ${JSON.stringify(lines[0])}`);
  const kinds = lines.slice(1).map((l) => l.split(',')[1]);
  for (const kind of ['gift', 'payout']) {
    if (!kinds.includes(kind)) throw new Error(`no ${kind} line in the statement:\n${csv}`);
  }
  step(`statement ${name}: ${lines.length - 1} lines (${kinds.join(', ')})`);

  step('moderation: Mo joins the room and chats (the server knows users who have written)');
  const moderatorContext = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const mod = await moderatorContext.newPage();
  logPage('mod', mod);
  await signIn(mod, 'Mo', 'viewer');
  await mod.goto(`${BASE}/watch.html?room=alice`);
  await mod.waitForFunction(() => window.ovation && window.ovation.joined, null, { timeout: 10000 });
  if (await mod.evaluate(() => window.ovation.moderator)) throw new Error('Mo moderates the room before being appointed');
  await mod.fill('#chat-input', 'hi, Mo here');
  await mod.click('#chat-send');
  await watch.locator('#messages li.chat', { hasText: 'hi, Mo here' }).waitFor({ timeout: 10000 });
  if (await watch.locator('.mod-menu-button').count()) throw new Error('a viewer who does not moderate sees moderation menus');

  step('broadcaster appoints Mo moderator on the live page’s panel; Mo’s page gets the menus');
  await live.locator('#moderation-panel').waitFor({ timeout: 10000 });
  await live.fill('#mod-user', 'mo');
  await live.click('#mod-add');
  await live.locator('#mod-list li[data-user="mo"]').waitFor({ timeout: 10000 });
  await mod.waitForFunction(() => window.ovation.moderator === true, null, { timeout: 10000 });
  await mod.locator('#mod-badge').waitFor({ timeout: 10000 });
  const own = mod.locator('#messages li.chat', { hasText: 'hi, Mo here' });
  if (await own.locator('.mod-menu-button').count()) throw new Error('a moderation menu on the moderator’s own message');

  step('viewer chats; Mo deletes the message from its menu and it leaves every page');
  const doomed = `please delete me ${Date.now()}`;
  await watch.fill('#chat-input', doomed);
  await watch.click('#chat-send');
  const onViewer = watch.locator('#messages li.chat', { hasText: doomed });
  await onViewer.waitFor({ timeout: 10000 });
  const doomedId = await onViewer.getAttribute('data-id');
  if (!doomedId) throw new Error('a chat message without data-id');
  const onMod = mod.locator(`#messages li[data-id="${doomedId}"]`);
  const onLive = live.locator(`#messages li[data-id="${doomedId}"]`);
  await onMod.waitFor({ timeout: 10000 });
  await onLive.waitFor({ timeout: 10000 });
  await onMod.locator('.mod-menu-button').click();
  await onMod.locator('[data-mod-action="delete"]').click();
  await onViewer.waitFor({ state: 'detached', timeout: 10000 });
  await onMod.waitFor({ state: 'detached', timeout: 10000 });
  await onLive.waitFor({ state: 'detached', timeout: 10000 });
  await watch.locator('#messages li.moderation[data-action="delete"]', { hasText: 'Mo deleted a message' }).waitFor({ timeout: 10000 });

  step('the broadcaster’s audit log shows Mo’s delete');
  await live.locator('#mod-log tbody tr[data-action="delete"]', { hasText: 'Mo deleted a message' }).waitFor({ timeout: 10000 });
  await live.locator('#mod-log tbody tr[data-action="mods_add"]', { hasText: 'Mo' }).waitFor({ timeout: 10000 });

  step('slow mode set on the panel shows on the viewer’s page, then goes off');
  await live.selectOption('#slow-select', '10');
  await watch.locator('#slow-mode', { hasText: 'Slow mode: 10 s' }).waitFor({ timeout: 10000 });
  await live.selectOption('#slow-select', '0');
  await watch.locator('#slow-mode').waitFor({ state: 'hidden', timeout: 10000 });

  step('Mo times the viewer out; the viewer’s next chat is refused with the server’s message');
  const before2 = `one more from Bob ${Date.now()}`;
  await watch.fill('#chat-input', before2);
  await watch.click('#chat-send');
  const target = mod.locator('#messages li.chat', { hasText: before2 });
  await target.waitFor({ timeout: 10000 });
  await target.locator('.mod-menu-button').click();
  await target.locator('[data-mod-action="timeout"]').click();
  await watch.locator('#messages li.moderation[data-action="timeout"]', { hasText: 'timed out Bob' }).waitFor({ timeout: 10000 });
  await watch.fill('#chat-input', 'am I still here?');
  await watch.click('#chat-send');
  await watch.locator('.toast-error', { hasText: /timed out/i }).first().waitFor({ timeout: 10000 });
  if (await watch.locator('#messages li.chat', { hasText: 'am I still here?' }).count()) throw new Error('a timed-out viewer’s chat was shown');

  step('broadcaster lifts the timeout from the panel; the viewer can chat again');
  const restricted = live.locator('#restricted-list li[data-user="bob"]');
  await restricted.waitFor({ timeout: 10000 });
  await restricted.locator('button').click();
  await restricted.waitFor({ state: 'detached', timeout: 10000 });
  await watch.fill('#chat-input', 'back again');
  await watch.click('#chat-send');
  await live.locator('#messages li.chat', { hasText: 'back again' }).waitFor({ timeout: 10000 });

  step('broadcaster turns on the assistant’s thanks on the live page');
  await live.check('#assistant-thanks');
  await live.fill('#assistant-template', 'Thanks {name} for the {sticker}!');
  await live.click('#assistant-save');
  await live.locator('#mod-log tbody tr[data-action="assistant"]').waitFor({ timeout: 10000 });

  step('stream overlay: the live page shows the overlay URL with its key');
  await live.locator('#overlay-panel').waitFor({ timeout: 10000 });
  await live.waitForFunction(() => /\/overlay\.html\?room=alice&key=[0-9a-f]{32}$/.test(document.getElementById('overlay-url').value),
    null, { timeout: 10000 });
  const overlayUrl = await live.inputValue('#overlay-url');
  if (!overlayUrl.startsWith(`${BASE}/`)) throw new Error(`the overlay URL is not absolute: ${overlayUrl}`);
  await live.click('#overlay-copy');
  await live.locator('.toast-success', { hasText: 'copied' }).first().waitFor({ timeout: 10000 });

  step('the overlay page (an OBS browser source) checks its key and joins the room');
  const obs = await browser.newContext({ viewport: { width: 1280, height: 720 } });
  const overlay = await obs.newPage();
  logPage('overlay', overlay);
  await overlay.goto(overlayUrl);
  await overlay.waitForFunction(() => document.body.dataset.state === 'ready', null, { timeout: 10000 });
  const look = await overlay.evaluate(() => {
    const [html, body] = [document.documentElement, document.body].map((e) => getComputedStyle(e));
    return { html: html.backgroundColor, body: body.backgroundColor, overflow: html.overflow + ' ' + body.overflow,
      scrolls: document.documentElement.scrollHeight > innerHeight || document.documentElement.scrollWidth > innerWidth };
  });
  if (look.html !== 'rgba(0, 0, 0, 0)' || look.body !== 'rgba(0, 0, 0, 0)') throw new Error(`the overlay is not transparent: ${JSON.stringify(look)}`);
  if (look.scrolls || look.overflow !== 'hidden hidden') throw new Error(`the overlay could scroll: ${JSON.stringify(look)}`);
  if (await overlay.locator('#alert').count()) throw new Error('the overlay shows an alert before any (history is not shown)');

  step('the same page with a wrong key, and with none, stays locked and opens no connection');
  const lockedPages = [];
  for (const url of [overlayUrl.replace(/key=[0-9a-f]+$/, `key=${'0'.repeat(32)}`), `${BASE}/overlay.html?room=alice`]) {
    const page = await obs.newPage();
    const sockets = [];
    page.on('websocket', (ws) => sockets.push(ws.url()));
    page.on('pageerror', (e) => console.log(`[locked overlay error] ${e.message}`));
    await page.goto(url);
    await page.waitForFunction(() => document.body.dataset.state === 'locked', null, { timeout: 10000 });
    lockedPages.push({ page, sockets, url });
  }

  step('the viewer sends a sticker; the overlay shows it as a gift alert');
  await watch.click('.sticker[data-id="rose"]');
  const giftAlert = overlay.locator('#alert[data-kind="gift"][data-sticker="rose"]');
  await giftAlert.waitFor({ timeout: 10000 });
  const alertText = await giftAlert.textContent();
  if (!alertText.includes('Bob') || !alertText.includes('🌹') || !/rose/i.test(alertText)) throw new Error(`the gift alert reads ${JSON.stringify(alertText)}`);
  // The assistant thanked that gift in the broadcaster's name, in the viewer's chat.
  await watch.locator('#messages li.chat', { hasText: /Thanks Bob for the Rose!/i }).waitFor({ timeout: 10000 });
  await overlay.waitForFunction(() => {
    const alert = document.getElementById('alert');
    return alert && alert.getAnimations().some((a) => a.animationName === 'overlay-in' && a.playState === 'finished');
  }, null, { timeout: 5000 }); // the entry animation has played
  await overlay.screenshot({ path: join(artifacts, 'overlay.png'), omitBackground: true });
  for (const { page, sockets, url } of lockedPages) {
    const state = await page.evaluate(() => ({ state: document.body.dataset.state, alerts: document.querySelectorAll('#alert, .overlay-alert').length,
      text: document.body.innerText.trim() }));
    if (state.state !== 'locked' || state.alerts || state.text || sockets.length) {
      throw new Error(`the overlay at ${url} is not blank and locked: ${JSON.stringify({ ...state, sockets })}`);
    }
  }

  step('Test alert and Replay last alert from the live page show on the overlay, one after the other');
  await live.click('#overlay-test');
  await overlay.locator('#alert[data-kind="test"]').waitFor({ timeout: 15000 });
  await live.click('#overlay-replay');
  await overlay.locator('#alert[data-kind="gift"][data-sticker="rose"][data-replay="true"]').waitFor({ timeout: 15000 });

  step('rotating the key on the live page locks the old URL; the new one works');
  await live.click('#overlay-rotate');
  await live.click('#overlay-rotate');
  await live.waitForFunction((old) => {
    const url = document.getElementById('overlay-url').value;
    return url !== old && /key=[0-9a-f]{32}$/.test(url);
  }, overlayUrl, { timeout: 10000 });
  await overlay.reload();
  await overlay.waitForFunction(() => document.body.dataset.state === 'locked', null, { timeout: 10000 });
  await overlay.goto(await live.inputValue('#overlay-url'));
  await overlay.waitForFunction(() => document.body.dataset.state === 'ready', null, { timeout: 10000 });

  step('likes: the viewer taps the heart 5 times; Mo’s page shows floating hearts and every total reaches 5');
  const shownBefore = await mod.evaluate(() => Number(document.getElementById('heart-layer').dataset.shown || 0));
  for (let i = 0; i < 5; i++) await watch.click('#like-button');
  await mod.locator('#heart-layer .heart').first().waitFor({ state: 'attached', timeout: 10000 });
  await mod.waitForFunction((b) => Number(document.getElementById('heart-layer').dataset.shown) >= b + 5, shownBefore, { timeout: 10000 });
  for (const page of [mod, watch, live]) {
    await page.waitForFunction(() => Number(document.getElementById('like-total').dataset.total) >= 5, null, { timeout: 10000 });
  }
  const likeText = await mod.textContent('#like-total');
  if (Number(likeText.replace(/\D/g, '')) < 5) throw new Error(`Mo’s page shows ${likeText} likes`);

  step('PK: two more broadcasters go live on their pages');
  const pkPage = {};
  for (const [name, id] of [['PK A', 'pk-a'], ['PK B', 'pk-b']]) {
    const context = await browser.newContext({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true });
    await context.grantPermissions(['camera', 'microphone'], { origin: BASE });
    const page = await context.newPage();
    logPage(id, page);
    await signIn(page, name, 'broadcaster');
    await page.goto(`${BASE}/live.html`);
    await page.click('#go-live');
    await page.waitForFunction(() => window.ovation.pc && window.ovation.pc.connectionState === 'connected', null, { timeout: 20000 });
    await page.locator('#pk-panel').waitFor({ timeout: 10000 });
    if (await page.locator('#pk-battle').isVisible()) throw new Error(`${id}'s page shows a battle before any`);
    pkPage[id] = page;
  }
  const [pkA, pkB] = [pkPage['pk-a'], pkPage['pk-b']];

  step('PK: a viewer watches pk-a and tops up');
  const fanContext = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const fan = await fanContext.newPage();
  logPage('fan', fan);
  await signIn(fan, 'Fay', 'viewer');
  await fan.goto(`${BASE}/watch.html?room=pk-a`);
  await waitForFrames(fan, 'main', 30);
  await fan.click('#topup');
  await fan.waitForFunction(() => Number(document.getElementById('balance').dataset.coins) > 0);
  if (await fan.locator('#pk-panel').isVisible()) throw new Error('the viewer’s page shows a PK panel before any battle');

  step('PK: an invite to a room that is not live shows the server’s refusal on the panel');
  await pkA.fill('#pk-invite-room', 'nobody-live');
  await pkA.fill('#pk-invite-seconds', '10');
  await pkA.click('#pk-invite-button');
  await pkA.locator('#pk-invite-error', { hasText: 'not live' }).waitFor({ timeout: 10000 });

  // 20 s: room for the checks below on a slow machine before the battle ends.
  step('PK: A invites pk-b for 20 s from the panel; B accepts on its page');
  await pkA.fill('#pk-invite-room', 'pk-b');
  await pkA.fill('#pk-invite-seconds', '20');
  await pkA.click('#pk-invite-button');
  await pkA.locator('#pk-invite-status', { hasText: 'waiting' }).waitFor({ timeout: 10000 });
  if (await pkA.locator('#pk-invite-error').isVisible()) throw new Error(`the invite was refused: ${await pkA.textContent('#pk-invite-error')}`);
  await pkB.locator('#pk-incoming').waitFor({ timeout: 10000 });
  const invitation = await pkB.textContent('#pk-incoming-text');
  if (!invitation.includes('pk-a')) throw new Error(`B's invitation reads ${JSON.stringify(invitation)}`);
  const answerIn = Number((await pkB.textContent('#pk-incoming-countdown')).replace(/\D/g, ''));
  if (!(answerIn > 20 && answerIn <= 30)) throw new Error(`B has ${answerIn} s to answer`);
  await pkB.click('#pk-accept');
  await pkB.locator('#pk-incoming').waitFor({ state: 'hidden', timeout: 10000 });

  step('PK: the viewer’s page shows the battle; the viewer’s sticker raises pk-a’s score on every page');
  await fan.locator('#pk-battle').waitFor({ timeout: 10000 });
  const pkId = await fan.getAttribute('#pk-battle', 'data-pk');
  await fan.click('.sticker[data-id="rose"]');
  const scored = () => {
    const score = document.getElementById('pk-score-pk-a');
    return !!score && Number(score.dataset.score) > 0 && Number(score.textContent.replace(/\D/g, '')) > 0;
  };
  for (const page of [fan, pkA, pkB]) await page.waitForFunction(scored, null, { timeout: 8000 });
  const other = await fan.textContent('#pk-score-pk-b');
  if (Number(other.replace(/\D/g, '')) !== 0) throw new Error(`pk-b scored ${other} without a gift`);
  if (!/^\d+:\d\d$/.test(await fan.textContent('#pk-countdown'))) throw new Error('no countdown on the viewer’s page');
  await fan.locator('#pk-top-own li', { hasText: 'Fay' }).waitFor({ timeout: 8000 });

  step('PK: the viewer plays both broadcasters side by side, the opponent muted; so does A’s page');
  await fan.waitForFunction(() => document.getElementById('stage').classList.contains('pk-on') && !document.getElementById('pk-opponent').hidden);
  const pkFrames = await waitForFrames(fan, 'pk', 10, 8000);
  await videoPlays(fan, '#video');
  await videoPlays(fan, '#pk-opponent-video');
  const muted = await fan.evaluate(() => document.getElementById('pk-opponent-video').muted);
  if (!muted) throw new Error('the opponent’s video is not muted by default');
  await fan.click('#pk-unmute');
  if (await fan.evaluate(() => document.getElementById('pk-opponent-video').muted)) throw new Error('Unmute left the opponent’s video muted');
  await videoPlays(pkA, '#pk-opponent-video');
  step(`viewer decoded ${pkFrames} frames of the opponent (battle ${pkId})`);
  await fan.screenshot({ path: join(artifacts, 'pk-viewer.png'), fullPage: true });
  await pkA.screenshot({ path: join(artifacts, 'pk-broadcaster.png'), fullPage: true });

  step('PK: the battle ends; every page shows pk-a as the winner, then the viewer is back to one video');
  await fan.locator('#pk-result[data-winner="pk-a"]').waitFor({ timeout: 30000 });
  await pkA.locator('#pk-result[data-winner="pk-a"]', { hasText: 'You win' }).waitFor({ timeout: 10000 });
  await pkB.locator('#pk-result[data-winner="pk-a"]').waitFor({ timeout: 10000 });
  const final = await (await fetch(`${BASE}/api/pk/${encodeURIComponent(pkId)}`)).json();
  if (final.state !== 'finished' || final.winner !== 'pk-a' || !(final.scores['pk-a'] > 0) || final.scores['pk-b'] !== 0) {
    throw new Error(`GET /api/pk/${pkId} says ${JSON.stringify(final)}`);
  }
  await fan.waitForFunction(() => !document.getElementById('stage').classList.contains('pk-on')
    && document.getElementById('pk-opponent').hidden && document.getElementById('pk-panel').hidden
    && !window.ovation.pk.pc && document.getElementById('pk-opponent-video').srcObject === null, null, { timeout: 15000 });
  await videoPlays(fan, '#video');
  await pkA.locator('#pk-battle').waitFor({ state: 'hidden', timeout: 15000 });
  if (await pkA.isDisabled('#pk-invite-button')) throw new Error('A cannot invite again after the battle');

  await live.screenshot({ path: join(artifacts, 'broadcaster.png'), fullPage: true });
  await watch.screenshot({ path: join(artifacts, 'viewer.png'), fullPage: true });
  await mod.screenshot({ path: join(artifacts, 'moderator.png'), fullPage: true });
  step(`screenshots in ${artifacts}`);
} catch (error) {
  failed = true;
  console.error(`[e2e] FAILED: ${error.stack || error}`);
  if (browser) await screenshotAll(browser, artifacts);
} finally {
  if (browser) await browser.close();
  if (server) await server.stop();
}
process.exit(failed ? 1 : 0);
