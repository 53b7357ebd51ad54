// Broadcaster page (phone upright): camera preview, WHIP go-live/stop,
// a feed of gifts and questions with one-tap thanks, earnings and viewers, the earnings
// panel (held/available/pending/paid, cash-out, payouts, statement; see earnings.js), and
// the broadcaster's own wallet (debt, today's spending against the cap, a minor's account),
// and the moderation panel (moderators, slow mode, blocked terms, bans, the audit log;
// see moderation.js), with a moderator's menu on each chat message by someone else;
// the room's likes (likes.js) and PK battles: invites, answers, the battle (pk.js).
import { getToken, currentUser, getEarnings, getCatalog, getWallet } from './api.js';
import { api } from './api.js'; // the stream overlay's routes
import { showDebt, showSpending, showMinor } from './wallet.js';
import { setupEarnings, showEarnings, formatMinor } from './earnings.js';
import { OvationSocket } from './ws.js';
import { setupLikes } from './likes.js';
import { setupPk } from './pk.js';
import { publish } from './whip.js';
import { $, el, toast, showError, formatCoins, stickerEmoji } from './ui.js';
import {
  sendMod, getModeration, describeRecord, modErrorMessages, refusalMessages, attachMenu, moderateMessage,
  removeEvent, formatDuration, SLOW_CHOICES,
} from './moderation.js';

const token = getToken();
const me = currentUser();
const preview = $('preview');
const state = { stream: null, session: null, pc: null, wantLive: false, starting: false, retryTimer: null, items: new Map() };
window.ovation = { get pc() { return state.pc; }, get session() { return state.session; } };

if (!me || me.role !== 'broadcaster') {
  $('not-broadcaster').hidden = false;
  $('go-live').disabled = true;
  $('chat-send').disabled = true;
} else {
  start();
}

function start() {
  const room = me.id;
  $('room-title').textContent = `${me.name}’s studio`;
  const ws = new OvationSocket(token);
  const likes = setupLikes({ ws, room, token, total: $('like-total'), layer: $('heart-layer') });
  const pk = setupPk({ ws, room, token, stage: $('stage'), broadcaster: true });
  Object.assign(window.ovation, { likes, pk });

  // ---------- camera & WHIP ----------

  function setButtons() {
    const live = !!state.session;
    $('go-live').disabled = live || state.starting;
    $('stop-live').disabled = !live && !state.starting;
    $('live-badge').hidden = !live;
    $('go-live').textContent = state.starting ? 'Starting…' : 'Go live';
  }

  async function camera() {
    if (state.stream && state.stream.getTracks().every((t) => t.readyState === 'live')) return state.stream;
    state.stream = await navigator.mediaDevices.getUserMedia({
      video: { facingMode: 'user', width: { ideal: 1280 }, height: { ideal: 720 } },
      audio: true,
    });
    preview.srcObject = state.stream;
    preview.play().catch(() => {});
    $('preview-note').hidden = true;
    return state.stream;
  }

  async function goLive() {
    if (state.session || state.starting) return;
    state.wantLive = true;
    state.starting = true;
    setButtons();
    try {
      const stream = await camera();
      const session = await publish(room, token, stream, {
        onPc: (pc) => { state.pc = pc; },
        onState: (s) => {
          if (state.session !== session) return;
          if (s === 'failed') {
            toast('The video connection dropped — reconnecting…', 'error');
            state.session = null;
            session.stop();
            setButtons();
            retry();
          }
        },
      });
      if (!state.wantLive) { session.stop(); return; }
      state.session = session;
      toast('You are live!', 'success');
    } catch (e) {
      showError(e, {
        forbidden: 'Only this room’s broadcaster can go live here.',
        conflict: 'You are already live from another device or tab.',
        unavailable: 'The video server is not available right now. Try again shortly.',
      });
      state.wantLive = false;
    } finally {
      state.starting = false;
      setButtons();
    }
  }

  function retry() {
    clearTimeout(state.retryTimer);
    state.retryTimer = setTimeout(() => { if (state.wantLive && !state.session) goLive(); }, 2000);
  }

  async function stopLive() {
    state.wantLive = false;
    clearTimeout(state.retryTimer);
    const session = state.session;
    state.session = null;
    setButtons();
    if (session) await session.stop();
    if (state.stream) state.stream.getTracks().forEach((t) => t.stop());
    state.stream = null;
    preview.srcObject = null;
    $('preview-note').hidden = false;
    $('preview-note').textContent = 'You are offline. Tap “Go live” to start again.';
  }

  $('go-live').addEventListener('click', goLive);
  $('stop-live').addEventListener('click', () => { stopLive(); toast('The stream has ended.'); });
  window.addEventListener('pagehide', () => { if (state.session) state.session.stop(); });

  // ---------- feed ----------

  const feed = $('feed');
  const stickerNames = new Map();

  async function ack(ref, text, item) {
    try {
      await ws.request({ type: 'ack', room, ref, text });
      markDone(item, text);
      return true;
    } catch (e) {
      showError(e, { not_found: 'That gift or question is no longer available to thank.' });
      return false;
    }
  }

  function markDone(item, text) {
    if (!item) return;
    item.classList.add('done');
    const thank = item.querySelector('.thank');
    thank.textContent = 'Thanked ✓';
    thank.disabled = true;
    item.querySelector('.feed-reply').textContent = `You: ${text}`;
  }

  function feedItem(e, kind, body) {
    const thank = el('button', { type: 'button', className: 'thank' }, 'Thank you');
    const item = el('li', { className: `feed-item ${kind}`, dataset: { id: e.id, from: e.from.id } },
      el('div', { className: 'feed-body' }, ...body), thank, el('p', { className: 'feed-reply muted' }));
    thank.addEventListener('click', async () => {
      thank.disabled = true;
      if (!(await ack(item.dataset.id, `Thank you, ${e.from.name}!`, item))) thank.disabled = false;
    });
    return item;
  }

  function addItem(item, id) {
    state.items.set(id, item);
    feed.prepend(item);
    $('feed-empty').hidden = true;
    while (feed.children.length > 100) {
      const last = feed.lastChild;
      state.items.delete(last.dataset.id);
      last.remove();
    }
  }

  ws.on('gift', (e, replay) => {
    const count = e.count > 1 ? ` ×${e.count}` : '';
    const body = [el('span', { className: 'feed-emoji', 'aria-hidden': 'true' }, stickerEmoji(e.sticker)),
      el('strong', {}, e.from.name), ` sent ${stickerNames.get(e.sticker) || e.sticker}${count} `,
      el('span', { className: 'muted feed-coins' }, `(${formatCoins(e.coins)} coins)`)];
    // A combo continues the newest item from the same sender with the same sticker.
    const top = feed.firstElementChild;
    if (e.combo > 1 && top && top.classList.contains('gift') && !top.classList.contains('done')
      && top.dataset.from === e.from.id && top.dataset.sticker === e.sticker) {
      state.items.delete(top.dataset.id);
      state.items.set(e.id, top);
      top.dataset.id = e.id;
      top.querySelector('.combo').textContent = `x${e.combo}`;
      top.dataset.coins = Number(top.dataset.coins || 0) + e.coins;
      top.querySelector('.feed-coins').textContent = `(${formatCoins(top.dataset.coins)} coins)`;
      top.classList.remove('bump'); void top.offsetWidth; top.classList.add('bump');
    } else {
      const item = feedItem(e, 'gift', body);
      item.dataset.sticker = e.sticker;
      item.dataset.coins = e.coins;
      item.querySelector('.feed-body').append(el('span', { className: 'combo' }, e.combo > 1 ? `x${e.combo}` : ''));
      addItem(item, e.id);
    }
    if (!replay) refreshEarnings();
  });

  ws.on('question', (e) => {
    const body = [el('span', { className: 'feed-emoji', 'aria-hidden': 'true' }, '❓'),
      el('strong', {}, e.from.name), ' ', el('span', { className: 'muted' }, `(${formatCoins(e.coins)} coins)`),
      el('p', { className: 'question-text' }, e.text)];
    const item = feedItem(e, 'question', body);
    const inputId = `answer-${e.id}`;
    const input = el('input', { id: inputId, className: 'answer-input grow', maxLength: 200, autocomplete: 'off', placeholder: 'Quick answer' });
    const form = el('form', { className: 'answer row' },
      el('label', { for: inputId, className: 'visually-hidden' }, `Answer ${e.from.name}`), input,
      el('button', { type: 'submit', className: 'answer-send secondary' }, 'Answer'));
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const text = input.value.trim();
      if (!text) return;
      if (await ack(item.dataset.id, text, item)) input.value = '';
    });
    item.append(form);
    addItem(item, e.id);
  });

  ws.on('ack', (e) => {
    markDone(state.items.get(e.ref), e.text);
    addMessage(el('li', { className: 'msg ack', dataset: { id: e.id } }, el('strong', {}, `You → ${e.to.name}: `), e.text));
  });

  // ---------- chat, red packets, presence ----------

  const messages = $('messages');
  function addMessage(node) {
    const nearBottom = messages.scrollHeight - messages.scrollTop - messages.clientHeight < 80;
    messages.append(node);
    while (messages.children.length > 200) messages.firstChild.remove();
    if (nearBottom) messages.scrollTop = messages.scrollHeight;
  }
  const menuOptions = { room, onAction: (action, target) => moderateMessage(ws, room, action, target, me) };
  ws.on('chat', (e) => {
    const li = el('li', { className: 'msg chat', dataset: { id: e.id, from: e.from.id, fromName: e.from.name } },
      el('span', { className: 'who' }, e.from.name), ' ', e.text);
    if (e.from.id !== me.id) attachMenu(li, menuOptions);
    addMessage(li);
  });
  ws.on('red_packet', (e) => addMessage(el('li', { className: 'msg packet' },
    `🧧 ${e.from.name} sent a red packet: ${formatCoins(e.coins)} coins in ${e.shares} shares`)));
  ws.on('grab', (e) => addMessage(el('li', { className: 'msg grab-result' },
    `🧧 ${e.by.name} grabbed ${formatCoins(e.coins)} coins (${e.left} left)`)));

  ws.on('reset', () => { feed.replaceChildren(); messages.replaceChildren(); state.items.clear(); $('feed-empty').hidden = false; });
  ws.on('joined', (ok) => {
    $('viewers').textContent = ok.viewers;
    refreshEarnings();
    if (ok.moderation) showSlow(ok.moderation.slow);
    refreshModeration();
  });
  ws.on('presence', (e) => { $('viewers').textContent = e.viewers; });
  ws.on('balance', () => loadWallet());
  ws.on('error', (e) => showError(e));
  ws.on('status', (s) => {
    $('conn').textContent = s === 'open' ? '' : s === 'connecting' ? 'Connecting…' : 'Offline — reconnecting…';
  });

  $('chat').addEventListener('submit', async (e) => {
    e.preventDefault();
    const text = $('chat-input').value.trim();
    if (!text) return;
    try { await ws.request({ type: 'chat', room, text }); $('chat-input').value = ''; }
    catch (err) { showError(err, refusalMessages(err)); }
  });

  // ---------- moderation ----------

  ws.on('deleted', (e) => {
    removeEvent(messages, e.id);
    if (removeEvent(feed, e.id)) state.items.delete(e.id);
    $('feed-empty').hidden = feed.children.length > 0;
  });

  ws.on('moderation', (e, replay) => {
    addMessage(el('li', { className: 'msg system moderation', dataset: { action: e.action } }, describeRecord(e, me)));
    if (replay) return;
    if (e.action === 'slow') showSlow(e.seconds);
    refreshModeration();
  });

  /** Sends a `mod` action from the panel; true when it was taken. */
  async function moderate(action, fields, button) {
    if (button) button.disabled = true;
    try {
      await sendMod(ws, room, action, fields);
      refreshModeration();
      return true;
    } catch (err) {
      showError(err, modErrorMessages(err));
      return false;
    } finally {
      if (button) button.disabled = false;
    }
  }

  function showSlow(seconds) {
    const value = String(Number(seconds) || 0);
    const select = $('slow-select');
    if (![...select.options].some((o) => o.value === value)) {
      select.append(el('option', { value }, formatDuration(Number(value))));
    }
    select.value = value;
    select.dataset.seconds = value;
  }

  function chip(label, title, onRemove, dataset) {
    const remove = el('button', { type: 'button', className: 'chip-remove secondary small', 'aria-label': title, title }, '×');
    remove.addEventListener('click', () => onRemove(remove));
    return el('li', { className: 'chip', dataset }, el('span', {}, label), remove);
  }

  const clock = (ms) => new Date(ms).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' });

  function renderModeration({ rules, log }) {
    showSlow(rules.slow);
    showAssistant(rules.assistant);
    $('mod-list').replaceChildren(...(rules.moderators || []).map((user) =>
      chip(user, `Remove ${user} as a moderator`, (b) => moderate('mods_remove', { user }, b), { user })));
    $('mod-list-empty').hidden = (rules.moderators || []).length > 0;
    $('term-list').replaceChildren(...(rules.terms || []).map((term) =>
      chip(term, `Unblock “${term}”`, (b) => moderate('terms_remove', { term }, b), { term })));
    const restricted = rules.restricted || [];
    $('restricted-list').replaceChildren(...restricted.map((r) =>
      chip(r.until_ms ? `${r.user} (until ${clock(r.until_ms)})` : `${r.user} (banned)`, `Lift ${r.user}’s ban or timeout`,
        (b) => moderate('unban', { user: r.user }, b), { user: r.user })));
    $('restricted-empty').hidden = restricted.length > 0;
    const rows = (log || []).map((record) => el('tr', { dataset: { rev: record.rev, action: record.action } },
      el('td', { className: 'muted' }, el('time', { dateTime: new Date(record.at_ms).toISOString() }, clock(record.at_ms))),
      el('td', {}, describeRecord(record, me))));
    $('mod-log').tBodies[0].replaceChildren(...rows);
    $('mod-log-empty').hidden = rows.length > 0;
    $('moderation-panel').hidden = false;
  }

  // One GET at a time; a refresh asked for meanwhile runs once after it. While the
  // server cannot answer (503), it is tried again with back-off.
  let moderationBusy = false;
  let moderationAgain = false;
  const moderationRetry = { timer: null, delay: 1000 };
  async function refreshModeration() {
    if (moderationBusy) { moderationAgain = true; return; }
    moderationBusy = true;
    clearTimeout(moderationRetry.timer);
    try {
      renderModeration(await getModeration(token, room, 50));
      moderationRetry.delay = 1000;
    } catch (err) {
      if (err.code === 'forbidden' || err.code === 'not_found') $('moderation-panel').hidden = true;
      else if (err.code === 'unauthorized') showError(err, { unauthorized: 'Your sign-in has expired; sign in again.' });
      else {
        const delay = Number.isFinite(err.retry_after_ms) ? Math.max(err.retry_after_ms, 500) : moderationRetry.delay;
        moderationRetry.delay = Math.min(moderationRetry.delay * 2, 30000);
        moderationRetry.timer = setTimeout(refreshModeration, delay);
      }
    } finally {
      moderationBusy = false;
      if (moderationAgain) { moderationAgain = false; refreshModeration(); }
    }
  }

  const userId = () => $('mod-user').value.trim().toLowerCase();
  function validUser(user) {
    if (/^[a-z0-9_-]{1,64}$/.test(user)) return true;
    toast('Enter a user id: lowercase letters, digits, - and _.', 'error');
    $('mod-user').focus();
    return false;
  }
  $('mods-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const user = userId();
    if (!validUser(user)) return;
    if (await moderate('mods_add', { user }, $('mod-add'))) { $('mod-user').value = ''; toast(`${user} is now a moderator.`, 'success'); }
  });
  $('mod-remove').addEventListener('click', async () => {
    const user = userId();
    if (!validUser(user)) return;
    if (await moderate('mods_remove', { user }, $('mod-remove'))) { $('mod-user').value = ''; toast(`${user} is no longer a moderator.`, 'success'); }
  });

  // The room's assistant: thanks in the broadcaster's name, reminders of questions.
  function showAssistant(settings) {
    if (!settings || document.activeElement?.closest('#assistant-form')) return;
    $('assistant-thanks').checked = settings.thanks;
    $('assistant-template').value = settings.template;
    const window = String(settings.answer_window_s);
    const select = $('assistant-window');
    if (![...select.options].some((o) => o.value === window)) {
      select.append(el('option', { value: window }, formatDuration(Number(window))));
    }
    select.value = window;
  }
  $('assistant-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const settings = {
      thanks: $('assistant-thanks').checked,
      template: $('assistant-template').value.trim() || undefined,
      answer_window_s: Number($('assistant-window').value),
    };
    if (await moderate('assistant', settings, $('assistant-save'))) toast('Assistant saved.', 'success');
  });

  $('slow-select').addEventListener('change', async () => {
    const select = $('slow-select');
    const seconds = Number(select.value);
    if (!SLOW_CHOICES.includes(seconds)) return;
    if (!(await moderate('slow', { seconds }, select))) showSlow(select.dataset.seconds);
    else select.dataset.seconds = String(seconds);
  });

  const termValue = () => $('term-input').value.trim();
  $('terms-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const term = termValue();
    if (!term) return;
    if (await moderate('terms_add', { term }, $('term-add'))) $('term-input').value = '';
  });
  $('term-remove').addEventListener('click', async () => {
    const term = termValue();
    if (!term) return;
    if (await moderate('terms_remove', { term }, $('term-remove'))) $('term-input').value = '';
  });

  // ---------- stream overlay ----------

  // The OBS browser-source URL (with the room's read-only overlay key), hidden until
  // shown; Copy, Test alert, Replay last alert, and Rotate key (asks for a second tap:
  // the old URL stops working).
  const overlay = { url: '', confirmTimer: null };
  function showOverlay({ url }) {
    overlay.url = new URL(url, location.origin).href;
    $('overlay-url').value = overlay.url;
    $('overlay-url').dataset.url = overlay.url;
    $('overlay-panel').hidden = false;
  }
  async function loadOverlay(delay = 1000) {
    try { showOverlay(await api('/api/me/overlay', { token })); }
    catch (err) {
      if (err.code === 'unavailable') setTimeout(() => loadOverlay(Math.min(delay * 2, 30000)), delay);
    }
  }
  async function overlayAction(path, button, done) {
    button.disabled = true;
    try { done(await api(path, { method: 'POST', token })); }
    catch (err) { showError(err); }
    finally { button.disabled = false; }
  }
  $('overlay-copy').addEventListener('click', async () => {
    const input = $('overlay-url');
    try {
      await navigator.clipboard.writeText(overlay.url);
    } catch {
      const type = input.type;
      input.type = 'text';
      input.select();
      document.execCommand('copy');
      input.type = type;
    }
    toast('Overlay URL copied — paste it into an OBS Browser source.', 'success');
  });
  $('overlay-show').addEventListener('click', () => {
    const shown = $('overlay-url').type === 'text';
    $('overlay-url').type = shown ? 'password' : 'text';
    $('overlay-show').textContent = shown ? 'Show' : 'Hide';
    $('overlay-show').setAttribute('aria-pressed', String(!shown));
  });
  $('overlay-test').addEventListener('click', () => overlayAction('/api/me/overlay/test', $('overlay-test'),
    () => toast('Test alert sent to your open overlays.', 'success')));
  $('overlay-replay').addEventListener('click', () => overlayAction('/api/me/overlay/replay', $('overlay-replay'),
    () => toast('Your open overlays replay their last alert.', 'success')));
  $('overlay-rotate').addEventListener('click', () => {
    const button = $('overlay-rotate');
    if (!button.classList.contains('danger')) {
      button.classList.replace('secondary', 'danger');
      button.textContent = 'Tap again: old URL stops';
      clearTimeout(overlay.confirmTimer);
      overlay.confirmTimer = setTimeout(() => { button.classList.replace('danger', 'secondary'); button.textContent = 'Rotate key'; }, 5000);
      return;
    }
    clearTimeout(overlay.confirmTimer);
    button.classList.replace('danger', 'secondary');
    button.textContent = 'Rotate key';
    overlayAction('/api/me/overlay/rotate', button, (body) => {
      showOverlay(body);
      toast('New overlay URL: paste it into OBS; the old one shows nothing now.', 'success');
    });
  });
  loadOverlay();

  // ---------- earnings ----------

  let earningsTimer = null;
  let earningsBusy = false;
  function refreshEarnings() {
    clearTimeout(earningsTimer);
    earningsTimer = setTimeout(async () => {
      if (earningsBusy) { refreshEarnings(); return; }
      earningsBusy = true;
      try {
        const e = await getEarnings(token);
        $('earnings').textContent = formatMinor(e.broadcaster);
        $('earnings').dataset.minor = e.broadcaster;
        showEarnings(e);
      } catch (err) {
        if (err.code === 'unauthorized') showError(err, { unauthorized: 'Your sign-in has expired; sign in again.' });
      } finally { earningsBusy = false; }
    }, 300);
  }

  // ---------- the broadcaster's own wallet ----------

  async function loadWallet() {
    try {
      const wallet = await getWallet(token);
      $('balance').textContent = formatCoins(wallet.coins);
      $('balance').dataset.coins = wallet.coins;
      showDebt(wallet.debt);
      showSpending(wallet);
      showMinor(me);
      $('wallet-panel').hidden = false;
    } catch { /* not essential to going live */ }
  }

  setupEarnings(token, refreshEarnings);
  setButtons();
  ws.connect();
  loadWallet();
  getCatalog()
    .then((c) => c.stickers.forEach((st) => stickerNames.set(st.id, st.name)))
    .catch(() => {})
    .finally(() => ws.join(room).catch((e) => showError(e)));
}
