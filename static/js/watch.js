// Viewer page: WHEP video, chat, gifts, paid questions, red packets, leaderboard;
// for the room's moderators, a menu on each message by someone else (see moderation.js);
// likes and floating hearts (likes.js); PK battles, the opponent's video beside (pk.js).
import { getToken, currentUser, getCatalog, getWallet, setDailyLimit, getLeaderboard, topUp, newKey, getCoinPacks, buyInDevStore } from './api.js';
import { OvationSocket } from './ws.js';
import { play } from './whip.js';
import { $, el, toast, showError, formatCoins, stickerEmoji } from './ui.js';
import { showDebt, showSpending, showMinor } from './wallet.js';
import { isServerFault, retryServerFaults, MAX_RETRIES, RETRY_CAP_MS } from './retry.js';
import { attachMenu, syncMenus, moderateMessage, describeRecord, slowModeText, refusalMessages, removeEvent } from './moderation.js';
import { setupLikes } from './likes.js';
import { setupPk } from './pk.js';

const room = new URLSearchParams(location.search).get('room') || '';
if (!/^[a-z0-9_-]{1,64}$/.test(room)) location.replace('/');

const token = getToken();
const me = currentUser();
const video = $('video');
const state = {
  catalog: new Map(),
  questionMin: 1,
  hostName: me && me.id === room ? me.name : room,
  kinds: new Map(), // event id -> 'gift' | 'question'
  packets: new Map(), // packet id -> grab button
  live: false,
  playback: null,
  pc: null,
  generation: 0,
  retryTimer: null,
  retryDelay: 1000,
  joined: false,
  moderator: false, // may moderate this room (the join reply, then mods_add / mods_remove events)
  slow: 0, // slow mode's period in seconds, 0: off
};
window.ovation = {
  get pc() { return state.pc; }, get playback() { return state.playback; },
  get joined() { return state.joined; }, get moderator() { return state.moderator; },
};

document.title = `${room} · Ovation`;
$('room-title').textContent = room;
const ws = new OvationSocket(token);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const likes = setupLikes({ ws, room, token, button: $('like-button'), total: $('like-total'), layer: $('heart-layer') });
const pk = setupPk({ ws, room, token, stage: $('stage') });
Object.assign(window.ovation, { likes, pk });

// ---------- video ----------

function showStageNote(text) {
  $('offline').textContent = text || '';
  $('offline').hidden = !text;
}

function scheduleRetry() {
  clearTimeout(state.retryTimer);
  if (!state.live) return;
  showStageNote('Reconnecting to the stream…');
  state.retryTimer = setTimeout(startPlayback, state.retryDelay);
  state.retryDelay = Math.min(state.retryDelay * 2, 15000);
}

function stopPlayback() {
  state.generation++;
  clearTimeout(state.retryTimer);
  if (state.playback) state.playback.stop();
  state.playback = null;
  video.srcObject = null;
}

async function startPlayback() {
  stopPlayback();
  if (!state.live) { showStageNote('The stream is offline.'); return; }
  const generation = state.generation;
  showStageNote('Connecting to the stream…');
  let disconnectTimer = null;
  const onState = (s) => {
    if (generation !== state.generation) return;
    clearTimeout(disconnectTimer);
    if (s === 'connected') { state.retryDelay = 1000; }
    else if (s === 'failed' || s === 'closed') scheduleRetry();
    else if (s === 'disconnected') disconnectTimer = setTimeout(scheduleRetry, 4000);
  };
  try {
    const session = await play(room, token, video, { onState, onPc: (pc) => { state.pc = pc; } });
    if (generation !== state.generation) { session.stop(); return; }
    state.playback = session;
  } catch (e) {
    if (generation === state.generation) scheduleRetry();
  }
}

function setLive(live, { restart = false } = {}) {
  const was = state.live;
  state.live = live;
  if (!live) { stopPlayback(); showStageNote('The stream is offline.'); return; }
  const healthy = state.playback && !['failed', 'closed'].includes(state.playback.pc.connectionState);
  if (restart || !was || !healthy) { state.retryDelay = 1000; startPlayback(); }
}

video.addEventListener('playing', () => showStageNote(''));
$('unmute').addEventListener('click', () => {
  video.muted = !video.muted;
  $('unmute').textContent = video.muted ? 'Unmute' : 'Mute';
  $('unmute').setAttribute('aria-pressed', String(!video.muted));
  video.play().catch(() => {});
});
$('unmute').setAttribute('aria-pressed', 'false');
window.addEventListener('pagehide', () => { if (state.playback) state.playback.stop(); });

// ---------- chat list ----------

const messages = $('messages');
function addMessage(node) {
  const nearBottom = messages.scrollHeight - messages.scrollTop - messages.clientHeight < 80;
  messages.append(node);
  while (messages.children.length > 300) messages.firstChild.remove();
  if (nearBottom) messages.scrollTop = messages.scrollHeight;
}
const who = (user) => el('span', { className: user.id === room ? 'who host' : 'who' }, user.name);

/** A chat or question element: carries its event id and author, and a moderator's menu. */
function authored(className, e, ...children) {
  const li = el('li', { className, dataset: { id: e.id, from: e.from.id, fromName: e.from.name } }, ...children);
  if (state.moderator && !(me && e.from.id === me.id)) attachMenu(li, menuOptions);
  return li;
}
const stickerName = (id) => (state.catalog.get(id) || {}).name || id;

function learnHost(user) {
  if (user && user.id === room) state.hostName = user.name;
}

// ---------- moderation ----------

const menuOptions = { room, onAction: (action, target) => moderateMessage(ws, room, action, target, me) };

function setModerator(on) {
  state.moderator = !!on && !!token;
  document.body.classList.toggle('moderator', state.moderator);
  $('mod-badge').hidden = !state.moderator;
  syncMenus(messages, { on: state.moderator, me, ...menuOptions });
}

function setSlow(seconds) {
  state.slow = Number(seconds) || 0;
  $('slow-mode').textContent = slowModeText(state.slow);
  $('slow-mode').hidden = !state.slow;
  $('slow-mode').dataset.seconds = state.slow;
}

ws.on('deleted', (e) => {
  removeEvent(messages, e.id);
  removeEvent($('pinned'), e.id);
});

ws.on('moderation', (e, replay) => {
  addMessage(el('li', { className: 'msg system moderation', dataset: { action: e.action } }, describeRecord(e, me)));
  if (replay) return; // the join reply's `moderation` already says where things stand
  if (e.action === 'slow') setSlow(e.seconds);
  if ((e.action === 'mods_add' || e.action === 'mods_remove') && me && e.user && e.user.id === me.id) {
    setModerator(e.action === 'mods_add');
    toast(e.action === 'mods_add' ? 'You are now a moderator of this room.' : 'You are no longer a moderator of this room.');
  }
});

// ---------- events ----------

ws.on('reset', () => {
  messages.replaceChildren();
  $('pinned').replaceChildren();
  state.packets.clear();
});

ws.on('joined', (ok) => {
  $('viewers').textContent = ok.viewers;
  const moderation = ok.moderation || {};
  setSlow(moderation.slow);
  setModerator(moderation.moderator);
  state.joined = true;
  setLive(!!ok.live);
  loadLeaderboard();
});

ws.on('chat', (e) => {
  learnHost(e.from);
  addMessage(authored('msg chat', e, who(e.from), ' ', e.text));
});

ws.on('gift', (e, replay) => {
  learnHost(e.from);
  state.kinds.set(e.id, 'gift');
  const count = e.count > 1 ? ` ×${e.count}` : '';
  addMessage(el('li', { className: 'msg gift', dataset: { id: e.id } }, who(e.from),
    ` sent ${stickerEmoji(e.sticker)} ${stickerName(e.sticker)}${count}`,
    e.combo > 1 ? el('span', { className: 'combo' }, ` x${e.combo}`) : null));
  if (!replay) animateGift(e);
});

ws.on('question', (e) => {
  learnHost(e.from);
  state.kinds.set(e.id, 'question');
  addMessage(authored('msg question', e, '❓ ', who(e.from),
    el('span', { className: 'muted' }, ` (${formatCoins(e.coins)} coins) `), e.text));
  pinQuestion(e);
});

ws.on('ack', (e) => {
  const verb = state.kinds.get(e.ref) === 'question' ? 'answered' : 'thanked';
  const mine = me && e.to.id === me.id;
  addMessage(el('li', { className: mine ? 'msg ack ack-me' : 'msg ack', dataset: { id: e.id } },
    el('strong', {}, `${state.hostName} ${verb} ${e.to.name}${mine ? ' (you)' : ''}: `), e.text));
});

ws.on('red_packet', (e) => {
  learnHost(e.from);
  const button = el('button', { type: 'button', className: 'grab small', dataset: { packet: e.id } }, 'Grab');
  button.addEventListener('click', () => grab(e.id, button));
  state.packets.set(e.id, button);
  addMessage(el('li', { className: 'msg packet' }, '🧧 ', who(e.from),
    ` sent a red packet: ${formatCoins(e.coins)} coins in ${e.shares} ${e.split} share${e.shares === 1 ? '' : 's'} `, button));
});

ws.on('grab', (e) => {
  const mine = me && e.by.id === me.id;
  addMessage(el('li', { className: 'msg grab-result' }, '🧧 ', who(e.by),
    ` grabbed ${formatCoins(e.coins)} coin${e.coins === 1 ? '' : 's'}${e.left ? ` (${e.left} left)` : ' — the packet is empty'}`));
  const button = state.packets.get(e.packet);
  if (button && mine) { button.disabled = true; button.textContent = `Got ${e.coins}`; }
  else if (button && e.left === 0 && !button.disabled) { button.disabled = true; button.textContent = 'Empty'; }
});

ws.on('stream', (e, replay) => {
  if (replay) return; // the join reply's `live` already says where it stands
  addMessage(el('li', { className: 'msg system' }, e.live ? 'The stream started.' : 'The stream ended.'));
  setLive(e.live, { restart: e.live });
});

ws.on('presence', (e) => { if (e.room === room) $('viewers').textContent = e.viewers; });
ws.on('leaderboard', (e) => { if (e.room === room || !e.room) renderLeaderboard(e.top); });
ws.on('balance', (e) => setBalance(e.coins, e.debt || 0));
ws.on('error', (e) => showError(e));
ws.on('status', (s) => {
  $('conn').textContent = s === 'open' ? '' : s === 'connecting' ? 'Connecting…' : 'Offline — reconnecting…';
});

// ---------- gifts animation & pinned questions ----------

function animateGift(e) {
  const layer = $('gift-layer');
  const tier = Math.min(5, Math.max(1, e.tier || (state.catalog.get(e.sticker) || {}).tier || 1));
  const node = el('div', { className: `gift-anim tier-${tier}` },
    el('span', { className: 'gift-emoji' }, stickerEmoji(e.sticker)),
    el('span', { className: 'gift-label' }, `${e.from.name}: ${stickerName(e.sticker)}${e.count > 1 ? ` ×${e.count}` : ''}`),
    el('span', { className: 'gift-combo' }, `x${e.combo || 1}`));
  layer.append(node);
  while (layer.children.length > 12) layer.firstChild.remove();
  const remove = () => node.remove();
  node.addEventListener('animationend', remove);
  setTimeout(remove, 1500 + tier * 700);
}

function pinQuestion(e) {
  const remaining = (e.ts || Date.now()) + (e.pin_ms || 10000) - Date.now();
  if (remaining <= 0) return;
  const item = el('li', { className: 'pinned-q', dataset: { id: e.id } },
    el('span', { className: 'pin-coins' }, `${formatCoins(e.coins)} 🪙`), ' ',
    el('strong', {}, `${e.from.name}: `), e.text);
  $('pinned').prepend(item);
  setTimeout(() => item.remove(), Math.min(remaining, 300000));
}

// ---------- money ----------

function setBalance(coins, debt) {
  $('balance').textContent = formatCoins(coins);
  $('balance').dataset.coins = coins;
  if (debt !== undefined) showDebt(debt);
}

/**
 * Runs a paid action, retrying it through a server fault (payments down) with back-off
 * and a notice on screen. `attempt` must send the same request, with the same key, each time.
 */
async function paid(attempt) {
  let notice = null;
  const onRetry = ({ retry, delay }) => {
    const text = `Payments are unavailable, retrying in ${Math.ceil(delay / 1000)} s… (${retry} of ${MAX_RETRIES})`;
    if (notice && notice.isConnected) notice.textContent = text;
    else notice = toast(text, 'info', RETRY_CAP_MS + 10000);
  };
  try {
    return await retryServerFaults(attempt, { onRetry });
  } finally {
    if (notice) notice.remove();
  }
}

/** Sends a charged message with one idempotency key, retrying safely after a lost connection or a server fault. */
async function charge(message) {
  const request = { ...message, room, key: newKey() };
  const ok = await paid(async () => {
    for (let attempt = 0; ; attempt++) {
      try {
        return await ws.request(request);
      } catch (e) {
        if (e.code === 'unavailable' && !isServerFault(e) && attempt < 2) { await sleep(1000 * (attempt + 1)); continue; }
        if (e.code === 'limit_reached') loadWallet();
        throw e;
      }
    }
  });
  if (typeof ok.balance === 'number') setBalance(ok.balance);
  loadWallet();
  return ok;
}

/** Overrides for a refused gift, question or red packet (a ban, suspended gifts, one's own room). */
const paidRefusal = (e) => ({
  ...refusalMessages(e),
  ...(me && me.id === room ? { forbidden: 'You cannot send gifts in your own room.' } : {}),
});

async function sendGift(id, button) {
  if (!token) { toast('Sign in to send gifts.', 'error'); return; }
  button.classList.remove('sent');
  try {
    await charge({ type: 'gift', sticker: id, count: 1 });
    void button.offsetWidth; // restart the pulse
    button.classList.add('sent');
  } catch (e) { showError(e, paidRefusal(e)); }
}

async function grab(packet, button) {
  if (!token) { toast('Sign in to grab red packets.', 'error'); return; }
  button.disabled = true;
  try {
    const request = { type: 'grab', room, packet };
    const ok = await paid(() => ws.request(request));
    if (typeof ok.balance === 'number') setBalance(ok.balance);
    button.textContent = `Got ${ok.coins}`;
    toast(`You grabbed ${formatCoins(ok.coins)} coin${ok.coins === 1 ? '' : 's'}!`, 'success');
  } catch (e) {
    if (e.code === 'conflict') button.textContent = 'Grabbed';
    else if (e.code === 'exhausted') button.textContent = 'Empty';
    else button.disabled = false;
    showError(e, { ...refusalMessages(e), conflict: 'You already grabbed this red packet.', exhausted: 'Too late — this red packet is empty.' });
  }
}

async function loadCatalog() {
  try {
    const catalog = await getCatalog();
    state.questionMin = catalog.question_min_coins || 1;
    $('question-coins').min = state.questionMin;
    $('question-coins').value = state.questionMin;
    $('stickers').replaceChildren(...catalog.stickers.map((s) => {
      state.catalog.set(s.id, s);
      const button = el('button', { type: 'button', className: `sticker tier-${s.tier || 1}`, dataset: { id: s.id },
        'aria-label': `Send ${s.name}, ${s.coins} coin${s.coins === 1 ? '' : 's'}` },
      el('span', { className: 'sticker-emoji', 'aria-hidden': 'true' }, stickerEmoji(s.id)),
      el('span', { className: 'sticker-name' }, s.name),
      el('span', { className: 'sticker-price' }, `${formatCoins(s.coins)} 🪙`));
      button.addEventListener('click', () => sendGift(s.id, button));
      button.addEventListener('animationend', () => button.classList.remove('sent'));
      return button;
    }));
  } catch (e) { showError(e); }
}

async function loadWallet() {
  if (!token) return;
  showMinor(me);
  if (me && me.minor) {
    $('stickers').hidden = true;
    $('buy').hidden = true;
  }
  try {
    const wallet = await getWallet(token);
    setBalance(wallet.coins, wallet.debt || 0);
    showSpending(wallet);
  } catch (e) { showError(e); }
}


async function saveLimit(dailyCoins) {
  try {
    showSpending(await setDailyLimit(token, dailyCoins));
    toast(dailyCoins === null ? 'Your own daily limit is cleared.' : `Your daily limit is ${formatCoins(dailyCoins)} coins.`, 'success');
  } catch (e) { showError(e); }
}

$('limits').addEventListener('submit', (e) => {
  e.preventDefault();
  const value = $('daily-coins').value.trim();
  saveLimit(value === '' ? null : Number(value));
});
$('limits-clear').addEventListener('click', () => { $('daily-coins').value = ''; saveLimit(null); });

function renderLeaderboard(top) {
  $('leaderboard').replaceChildren(...(top || []).slice(0, 10).map((entry) =>
    el('li', { className: me && entry.id === me.id ? 'me' : '' },
      el('span', { className: 'lb-name' }, entry.name),
      el('span', { className: 'lb-coins' }, `${formatCoins(entry.coins)} 🪙`))));
  if (!top || !top.length) $('leaderboard').append(el('li', { className: 'muted' }, 'No gifts yet.'));
}

async function loadLeaderboard() {
  try { renderLeaderboard((await getLeaderboard(room)).top); } catch { /* not essential */ }
}

$('topup').addEventListener('click', async () => {
  if (!token) { toast('Sign in to top up.', 'error'); return; }
  $('topup').disabled = true;
  try {
    const key = newKey();
    const { coins } = await paid(() => topUp(token, 1000, key));
    setBalance(coins);
    toast('Added 1,000 coins.', 'success');
  } catch (e) { showError(e, { not_found: 'Top-up is only available in dev mode.' }); }
  finally { $('topup').disabled = false; }
});

// Buy coins: dev mode's simulated store (a signed notification through the real
// payment route), or the platform's checkout.
async function loadCoinPacks() {
  let offer;
  try { offer = await getCoinPacks(); } catch { return; }
  if (!token || !offer.checkout || !offer.packs.length) return;
  $('buy').hidden = false;
  $('packs').replaceChildren(...offer.packs.map((pack) => {
    const price = `${(pack.price.amount / 100).toFixed(2)} ${pack.price.currency}`;
    const button = el('button', { type: 'button', className: 'secondary small' },
      `${formatCoins(pack.coins)} 🪙 · ${price}`);
    button.addEventListener('click', () => buy(offer.checkout, pack, button));
    return button;
  }));
}

async function buy(checkout, pack, button) {
  if (checkout.url) {
    location.assign(checkout.url.replace('{user}', encodeURIComponent(me.id)).replace('{pack}', encodeURIComponent(pack.id)));
    return;
  }
  button.disabled = true;
  try {
    const bought = await buyInDevStore(token, pack.id);
    setBalance(bought.coins, bought.debt);
    toast(`Bought ${formatCoins(pack.coins)} coins (simulated store).`, 'success');
    $('packs').hidden = true;
  } catch (e) { showError(e); }
  finally { button.disabled = false; }
}

$('buy').addEventListener('click', () => { $('packs').hidden = !$('packs').hidden; });

// ---------- forms ----------

$('chat').addEventListener('submit', async (e) => {
  e.preventDefault();
  const input = $('chat-input');
  const text = input.value.trim();
  if (!text) return;
  if (!token) { toast('Sign in to chat.', 'error'); return; }
  try {
    await ws.request({ type: 'chat', room, text });
    input.value = '';
  } catch (err) { showError(err, refusalMessages(err)); }
});

$('question').addEventListener('submit', async (e) => {
  e.preventDefault();
  const text = $('question-text').value.trim();
  const coins = Number($('question-coins').value);
  if (!text) return;
  if (!token) { toast('Sign in to ask a question.', 'error'); return; }
  if (!Number.isInteger(coins) || coins < state.questionMin) {
    toast(`A question costs at least ${state.questionMin} coins.`, 'error');
    return;
  }
  $('question-send').disabled = true;
  try {
    await charge({ type: 'question', text, coins });
    $('question-text').value = '';
    toast('Question sent — it is pinned for everyone.', 'success');
  } catch (err) { showError(err, { ...paidRefusal(err), bad_request: `A question needs text and at least ${state.questionMin} coins.` }); }
  finally { $('question-send').disabled = false; }
});

$('packet').addEventListener('submit', async (e) => {
  e.preventDefault();
  const coins = Number($('packet-coins').value);
  const shares = Number($('packet-shares').value);
  if (!token) { toast('Sign in to send a red packet.', 'error'); return; }
  if (!Number.isInteger(coins) || !Number.isInteger(shares) || coins < 1 || shares < 1 || shares > 1000) {
    toast('Enter whole numbers: at least 1 coin and 1 to 1000 shares.', 'error');
    return;
  }
  if (shares > coins) { toast('Each share needs at least one coin: use fewer shares or more coins.', 'error'); return; }
  $('packet-send').disabled = true;
  try {
    await charge({ type: 'red_packet', coins, shares, split: $('packet-split').value });
    toast('Red packet sent!', 'success');
  } catch (err) { showError(err, refusalMessages(err)); }
  finally { $('packet-send').disabled = false; }
});

// ---------- start ----------

if (!token) {
  $('guest-note').hidden = false;
  $('balance').textContent = '–';
}
renderLeaderboard([]);
loadWallet();
loadCoinPacks();
ws.connect();
loadCatalog().finally(() => ws.join(room).catch((e) => showError(e, { not_found: 'This room does not exist.' })));
