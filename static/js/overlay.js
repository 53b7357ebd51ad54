// The stream overlay (an OBS browser source): /overlay.html?room=ROOM&key=KEY.
//
// Checks its key first (GET /api/overlay/ROOM?key=KEY); without a valid one it shows
// nothing at all and opens no connection (body[data-state="locked"]). With one it
// joins the room as a guest over the WebSocket (ws.js: reconnects, rejoins with
// `since`) and shows each gift, question and red packet as an alert with an entry
// animation, queued and shown one at a time (#alert, data-kind = gift | question |
// red_packet | test). A repeat of the same sticker by the same sender joins the alert
// on screen or waiting (the combo). `overlay_test` shows a sample alert,
// `overlay_replay` the last real alert again. Optional: &seconds=N (1..30, default 4)
// per alert.
import { OvationSocket } from './ws.js';
import { getCatalog } from './api.js';
import { el, formatCoins, stickerEmoji } from './ui.js';

const params = new URLSearchParams(location.search);
const room = params.get('room') || '';
const key = params.get('key') || '';
const seconds = Number(params.get('seconds'));
const SHOW_MS = Number.isFinite(seconds) && seconds >= 1 && seconds <= 30 ? seconds * 1000 : 4000;
const LONGEST_MS = SHOW_MS * 3; // a combo keeps its alert up at most this long
const LEAVE_MS = 450; // the exit animation
const MAX_QUEUE = 50; // beyond this the oldest waiting alerts are dropped
const MISSED_MS = 60000; // alerts missed while reconnecting are still shown if this recent
const RECHECK_MS = 60000; // how often a running overlay asks whether its key still holds

const stage = document.getElementById('stage');
const stickerNames = new Map();
const queue = [];
const seen = new Set(); // event ids already alerted (a rejoin without history repeats them)
let showing = null; // { alert, node, started, timer }
let last = null; // the last real alert, for `overlay_replay`
let joins = 0;
let ws = null;
let recheckTimer = null;

const setState = (state) => { document.body.dataset.state = state; };
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
window.ovation = { get state() { return document.body.dataset.state; }, get queued() { return queue.length; } };

// ---------- the key ----------

/** 'valid', 'invalid' (refused: never retried) or 'unreachable' (try again later). */
async function checkKey() {
  try {
    const res = await fetch(`/api/overlay/${encodeURIComponent(room)}?key=${encodeURIComponent(key)}`, { cache: 'no-store' });
    if (res.ok) return 'valid';
    return res.status >= 500 || res.status === 408 || res.status === 429 ? 'unreachable' : 'invalid';
  } catch {
    return 'unreachable';
  }
}

function lock() {
  setState('locked');
  clearTimeout(recheckTimer);
  if (ws) ws.close();
  ws = null;
  queue.length = 0;
  if (showing) clearTimeout(showing.timer);
  showing = null;
  stage.replaceChildren();
  console.warn('Ovation overlay: this URL has no valid overlay key; copy it again from the broadcaster page.');
}

async function recheck() {
  clearTimeout(recheckTimer);
  if ((await checkKey()) === 'invalid') { lock(); return; }
  recheckTimer = setTimeout(recheck, RECHECK_MS);
}

// ---------- alerts ----------

const stickerName = (id) => stickerNames.get(id) || id;

function tierOf(coins) {
  if (coins >= 1000) return 4;
  if (coins >= 100) return 3;
  if (coins >= 10) return 2;
  return 1;
}

/** What an event shows: kind, who, a big emoji, a headline and a detail line. */
function describe(e) {
  const base = { id: e.id, from: e.from, coins: e.coins || 0 };
  if (e.type === 'gift') {
    return { ...base, kind: 'gift', sticker: e.sticker, count: e.count, combo: e.combo || 1, emoji: stickerEmoji(e.sticker) };
  }
  if (e.type === 'question') return { ...base, kind: 'question', text: e.text, emoji: '❓' };
  return { ...base, kind: 'red_packet', shares: e.shares, emoji: '🧧' };
}

function sample() {
  return { kind: 'test', from: { id: room, name: 'Ovation' }, coins: 0, emoji: '🎉' };
}

function headline(alert) {
  const name = el('strong', { className: 'overlay-name' }, alert.from.name);
  switch (alert.kind) {
    case 'gift': return [name, ` sent ${stickerName(alert.sticker)}${alert.count > 1 ? ` ×${alert.count}` : ''}`];
    case 'question': return [name, ' asks'];
    case 'red_packet': return [name, ' sent a red packet!'];
    default: return ['Test alert'];
  }
}

function detail(alert) {
  switch (alert.kind) {
    case 'gift': return `${formatCoins(alert.coins)} coins`;
    case 'question': return alert.text;
    case 'red_packet': return `${formatCoins(alert.coins)} coins in ${alert.shares} share${alert.shares === 1 ? '' : 's'} — grab one!`;
    default: return 'Your overlay is working.';
  }
}

function render(alert) {
  const dataset = { kind: alert.kind, tier: tierOf(alert.coins) };
  if (alert.sticker) dataset.sticker = alert.sticker;
  if (alert.replay) dataset.replay = 'true';
  const combo = alert.kind === 'gift' && alert.combo > 1 ? el('p', { className: 'overlay-combo' }, `combo x${alert.combo}`) : null;
  return el('div', { id: 'alert', className: `overlay-alert kind-${alert.kind}`, dataset, role: 'status' },
    el('div', { className: 'overlay-emoji', 'aria-hidden': 'true' }, alert.emoji),
    el('div', { className: 'overlay-text' },
      el('p', { className: 'overlay-title' }, ...headline(alert)),
      el('p', { className: 'overlay-detail' }, detail(alert)),
      combo));
}

const sameCombo = (a, b) => a.kind === 'gift' && b.kind === 'gift' && !a.replay
  && a.from.id === b.from.id && a.sticker === b.sticker;

function merge(into, alert) {
  into.count += alert.count;
  into.coins += alert.coins;
  into.combo = Math.max(into.combo, alert.combo);
  into.id = alert.id;
}

function enqueue(alert) {
  if (alert.kind === 'gift' && !alert.replay) {
    if (showing && !showing.leaving && sameCombo(showing.alert, alert)) {
      merge(showing.alert, alert);
      const node = render(showing.alert);
      node.classList.add('bump');
      showing.node.replaceWith(node);
      showing.node = node;
      const left = Math.min(SHOW_MS, showing.started + LONGEST_MS - Date.now());
      schedule(Math.max(left, 0));
      return;
    }
    const waiting = queue.find((a) => sameCombo(a, alert));
    if (waiting) { merge(waiting, alert); return; }
  }
  queue.push(alert);
  if (queue.length > MAX_QUEUE) queue.splice(0, queue.length - MAX_QUEUE);
  next();
}

function next() {
  if (showing || !queue.length || document.body.dataset.state === 'locked') return;
  const alert = queue.shift();
  const node = render(alert);
  stage.replaceChildren(node);
  showing = { alert, node, started: Date.now(), timer: null, leaving: false };
  schedule(SHOW_MS);
}

function schedule(ms) {
  clearTimeout(showing.timer);
  showing.timer = setTimeout(leave, ms);
}

function leave() {
  const current = showing;
  current.leaving = true;
  current.node.removeAttribute('id'); // #alert is only ever the alert being shown
  current.node.classList.add('leaving');
  setTimeout(() => {
    current.node.remove();
    if (showing === current) showing = null;
    next();
  }, LEAVE_MS);
}

/** A room event: remembered for replays; shown unless it is history from before we came. */
function onRoomEvent(e, replay) {
  if (!e.from) return;
  if (seen.has(e.id)) return;
  seen.add(e.id);
  if (seen.size > 1000) seen.delete(seen.values().next().value);
  const alert = describe(e);
  last = alert;
  // A join's history: the first join's is what happened before the overlay opened;
  // a rejoin's is what it missed while reconnecting (shown if recent).
  if (replay && (joins <= 1 || !(Date.now() - e.ts < MISSED_MS))) return;
  enqueue({ ...alert });
}

// ---------- the connection ----------

async function joinRoom() {
  for (let delay = 1000; ws; delay = Math.min(delay * 2, 30000)) {
    try { await ws.join(room); return; } catch (e) {
      if (e && e.lost) return; // rejoined by ws.js when the connection is back
      console.warn('Ovation overlay: joining failed', e);
      await sleep(delay);
    }
  }
}

async function start() {
  setState('checking');
  for (let delay = 1000; ; delay = Math.min(delay * 2, 30000)) {
    const result = await checkKey();
    if (result === 'valid') break;
    if (result === 'invalid') { lock(); return; }
    await sleep(delay); // the server is not up yet (OBS starts with the machine)
  }
  setState('connecting');
  recheckTimer = setTimeout(recheck, RECHECK_MS);
  getCatalog().then((c) => c.stickers.forEach((s) => stickerNames.set(s.id, s.name))).catch(() => {});
  ws = new OvationSocket(null);
  for (const type of ['gift', 'question', 'red_packet']) ws.on(type, onRoomEvent);
  ws.on('overlay_test', (e) => { if (e.room === room) enqueue(sample()); });
  ws.on('overlay_replay', (e) => { if (e.room === room && last) enqueue({ ...last, replay: true }); });
  ws.on('joined', () => { joins++; setState('ready'); });
  ws.on('status', (status) => {
    if (status === 'closed' && document.body.dataset.state !== 'locked') setState('connecting');
    if (status === 'open' && joins > 0) recheck(); // the key may have been rotated meanwhile
  });
  ws.on('error', (e) => console.warn('Ovation overlay:', e));
  ws.connect();
  joinRoom();
}

if (/^[a-z0-9_-]{1,64}$/.test(room) && /^[0-9A-Za-z_-]{8,64}$/.test(key)) start();
else lock();
