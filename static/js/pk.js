// PK battles (docs/pk.md), shared by the viewer and broadcaster pages. While a battle
// runs (the join reply's `pk`, or `pk` events with state `running`), the page shows the
// opponent's video beside the room's own (a second WHEP session, muted until unmuted),
// the score bar, the countdown to `ends_at` and each side's top supporters; on
// `finished`, the winner (or a draw) for RESULT_MS, then the opponent's video closes.
// The broadcaster page adds the invite form and answers incoming invites.
//
//   const pk = setupPk({ ws, room, token, stage, broadcaster });
//   pk.battle   // the battle shown (the newest `pk` object), or null
//   pk.pc       // the opponent video's RTCPeerConnection, or null
import { api } from './api.js';
import { play } from './whip.js';
import { $, el, toast, showError, describeError, formatCoins } from './ui.js';
import { formatDuration, sentence } from './moderation.js';

export const RESULT_MS = 6000;
const ROOM_RE = /^[a-z0-9_-]{1,64}$/;
const INVITE_TTL_MS = 30000; // the server's default; its `expires_at` rules when it is sane
const LATE_MS = 8000; // past `ends_at` without `finished`: ask GET /api/pk/{pk}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** "4:59" from milliseconds. */
export function formatCountdown(ms) {
  const s = Math.max(0, Math.ceil(ms / 1000));
  const m = Math.floor(s / 60);
  return `${m}:${String(s % 60).padStart(2, '0')}`;
}

/** The opponent's room over WHEP into `video`, reconnecting with back-off until stopped. */
class OpponentVideo {
  constructor(video, token, onStatus = () => {}) {
    this.video = video;
    this.token = token;
    this.onStatus = onStatus; // 'connecting' | 'playing' | 'waiting'
    this.room = null;
    this.session = null;
    this.pc = null;
    this.generation = 0;
    this.delay = 1000;
    this.retryTimer = null;
    this.lostTimer = null;
  }

  start(room) {
    if (this.room === room) return;
    this.stop();
    this.room = room;
    this.delay = 1000;
    this.onStatus('connecting');
    this.connect();
  }

  async connect() {
    const generation = ++this.generation;
    clearTimeout(this.retryTimer);
    clearTimeout(this.lostTimer);
    if (this.session) this.session.stop();
    this.session = null;
    const onState = (s) => {
      if (generation !== this.generation) return;
      clearTimeout(this.lostTimer);
      if (s === 'connected') { this.delay = 1000; this.onStatus('playing'); }
      else if (s === 'failed' || s === 'closed') this.retry();
      else if (s === 'disconnected') this.lostTimer = setTimeout(() => this.retry(), 4000);
    };
    try {
      const session = await play(this.room, this.token, this.video, {
        onState,
        onPc: (pc) => { if (generation === this.generation) this.pc = pc; },
      });
      if (generation !== this.generation) { session.stop(); return; }
      this.session = session;
    } catch {
      if (generation !== this.generation) return;
      this.pc = null;
      this.retry();
    }
  }

  retry() {
    if (!this.room) return;
    this.onStatus('waiting');
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this.connect(), this.delay);
    this.delay = Math.min(this.delay * 2, 15000);
  }

  stop() {
    this.generation++;
    this.room = null;
    clearTimeout(this.retryTimer);
    clearTimeout(this.lostTimer);
    if (this.session) this.session.stop();
    else if (this.pc) this.pc.close();
    this.session = null;
    this.pc = null;
    this.video.srcObject = null;
  }
}

export function setupPk({ ws, room, token, stage, broadcaster = false }) {
  const panel = $('pk-panel');
  const battleBox = $('pk-battle');
  const tile = $('pk-opponent');
  const video = $('pk-opponent-video');
  const countdown = $('pk-countdown');
  const result = $('pk-result');
  const barOwn = $('pk-bar-own');
  const scoreOwn = $('pk-score-own');
  const scoreOpp = $('pk-score-opp');
  const opponentVideo = new OpponentVideo(video, token, (status) => {
    tile.dataset.status = status;
    const opp = opponentVideo.room || '';
    $('pk-opponent-name').textContent = status === 'waiting' ? `${opp} · reconnecting…` : opp;
  });
  const state = {
    battle: null, // the newest `pk` object of the battle shown
    ended: new Set(), // battles whose end was shown (late events for them are ignored)
    tick: null,
    endTimer: null,
    checking: false,
    checkedAt: 0,
    offset: 0, // server clock minus this one, when an event tells it
    outgoing: null, // {pk, opponent, deadline, timer}
    incoming: null, // {pk, from, seconds, deadline, timer}
  };
  const now = () => Date.now() + state.offset;

  // ---------- the battle ----------

  /** [this room, the opponent's room] of a battle. */
  function sides(b) {
    const rooms = (Array.isArray(b.rooms) && b.rooms.length ? b.rooms : Object.keys(b.scores || {})).filter(Boolean);
    const own = rooms.includes(room) ? room : rooms[0] || room;
    return [own, rooms.find((r) => r !== own) || ''];
  }

  function renderTop(list, entries) {
    const top = (entries || []).slice(0, 3);
    list.replaceChildren(...top.map((entry) => el('li', { dataset: { id: entry.id || '' } },
      el('span', { className: 'pk-top-name' }, entry.name || entry.id || '?'),
      el('span', { className: 'pk-top-coins' }, `${formatCoins(entry.coins || 0)} 🪙`))));
    if (!top.length) list.append(el('li', { className: 'muted' }, 'No gifts yet.'));
  }

  function render(b) {
    const [own, opp] = sides(b);
    const scores = b.scores || {};
    const a = Math.max(0, Number(scores[own]) || 0);
    const c = Math.max(0, Number(scores[opp]) || 0);
    const share = a + c > 0 ? (100 * a) / (a + c) : 50;
    barOwn.style.width = `${share}%`;
    $('pk-bar').setAttribute('aria-label', `${own} ${formatCoins(a)}, ${opp} ${formatCoins(c)}`);
    scoreOwn.id = `pk-score-${own}`;
    scoreOwn.textContent = formatCoins(a);
    scoreOwn.dataset.score = String(a);
    scoreOwn.dataset.room = own;
    scoreOpp.id = `pk-score-${opp}`;
    scoreOpp.textContent = formatCoins(c);
    scoreOpp.dataset.score = String(c);
    scoreOpp.dataset.room = opp;
    $('pk-name-own').textContent = own;
    $('pk-name-opp').textContent = opp;
    const top = b.top || {};
    renderTop($('pk-top-own'), top[own]);
    renderTop($('pk-top-opp'), top[opp]);
    $('pk-top-own-title').textContent = `${own}’s top supporters`;
    $('pk-top-opp-title').textContent = `${opp}’s top supporters`;
    battleBox.dataset.pk = b.pk;
    battleBox.dataset.state = b.state;
  }

  function updateCountdown() {
    const b = state.battle;
    if (!b) return;
    const duration = Math.max(0, (Number(b.ends_at) || 0) - (Number(b.started_at) || 0));
    const left = b.state === 'running' ? Math.min(Math.max(0, (Number(b.ends_at) || 0) - now()), duration || Infinity) : 0;
    countdown.textContent = formatCountdown(left);
    countdown.dataset.ms = String(Math.round(left));
    countdown.classList.toggle('ending', b.state === 'running' && left <= 10000);
    // `finished` is late (a lost event, a reconnect): ask the server where the battle stands.
    if (b.state === 'running' && now() > b.ends_at + LATE_MS && !state.checking && Date.now() - state.checkedAt > 5000) check(b.pk);
  }

  async function check(pk) {
    state.checking = true;
    state.checkedAt = Date.now();
    try {
      apply(await api(`/api/pk/${encodeURIComponent(pk)}`), { fetched: true });
    } catch (e) {
      if (e.code === 'not_found' && state.battle && state.battle.pk === pk) close();
    } finally {
      state.checking = false;
    }
  }

  function show(b) {
    clearTimeout(state.endTimer);
    const [, opp] = sides(b);
    state.battle = b;
    if (Number.isFinite(b.now)) state.offset = b.now - Date.now();
    panel.hidden = false;
    battleBox.hidden = false;
    result.hidden = true;
    result.textContent = '';
    delete result.dataset.winner;
    stage.classList.add('pk-on');
    tile.hidden = false;
    if (opp) opponentVideo.start(opp);
    render(b);
    updateCountdown();
    if (!state.tick) state.tick = setInterval(updateCountdown, 250);
    setInviting();
  }

  function finish(b) {
    state.ended.add(b.pk);
    const shown = state.battle && state.battle.pk === b.pk;
    if (!shown) return; // never shown here (it ended while this page was away)
    state.battle = b;
    render(b);
    updateCountdown();
    const winner = b.winner || null;
    let text;
    if (!winner) text = 'Draw!';
    else if (broadcaster) text = winner === room ? 'You win! 🏆' : `${winner} wins`;
    else text = `${winner} wins! 🏆`;
    result.textContent = text;
    result.dataset.winner = winner || 'draw';
    result.hidden = false;
    clearTimeout(state.endTimer);
    state.endTimer = setTimeout(close, RESULT_MS);
  }

  /** Back to one video: the opponent's session ends and the battle leaves the page. */
  function close() {
    clearTimeout(state.endTimer);
    clearInterval(state.tick);
    state.tick = null;
    state.battle = null;
    opponentVideo.stop();
    stage.classList.remove('pk-on');
    tile.hidden = true;
    battleBox.hidden = true;
    result.hidden = true;
    delete battleBox.dataset.pk;
    delete battleBox.dataset.state;
    if (!broadcaster) panel.hidden = true;
    setInviting();
  }

  /** A `pk` object from an event, the join reply or GET /api/pk/{pk}. */
  function apply(b, { replay = false, fetched = false } = {}) {
    if (!b || !b.pk) return;
    if (!fetched && b.room && b.room !== room) return;
    if (b.state === 'declined' || b.state === 'expired') {
      answered(b);
      return;
    }
    if (state.ended.has(b.pk)) return;
    if (b.state === 'running') {
      if (state.outgoing && state.outgoing.pk === b.pk) clearOutgoing();
      if (state.incoming && state.incoming.pk === b.pk) clearIncoming();
      if ((replay || fetched) && Number(b.ends_at) < now() - LATE_MS) return; // long over
      show(b);
    } else if (b.state === 'finished') {
      if (replay) { state.ended.add(b.pk); return; }
      finish(b);
    }
  }

  ws.on('pk', (e, replay) => apply(e, { replay }));

  ws.on('joined', (ok) => {
    if (ok.room && ok.room !== room) return;
    if (ok.pk) apply({ ...ok.pk, room }, { replay: true });
    // The battle shown ended while the connection was down.
    else if (state.battle && state.battle.state === 'running') check(state.battle.pk);
  });

  $('pk-unmute').addEventListener('click', () => {
    video.muted = !video.muted;
    $('pk-unmute').textContent = video.muted ? 'Unmute' : 'Mute';
    $('pk-unmute').setAttribute('aria-pressed', String(!video.muted));
    video.play().catch(() => {});
  });
  window.addEventListener('pagehide', () => opponentVideo.stop());

  // ---------- the broadcaster's invites ----------

  function setInviting() {
    if (!broadcaster) return;
    const busy = !!state.battle || !!state.outgoing;
    $('pk-invite-button').disabled = busy || !!state.sending;
    $('pk-invite-form').classList.toggle('busy', busy);
  }

  function inviteStatus(text) {
    $('pk-invite-status').textContent = text || '';
    $('pk-invite-status').hidden = !text;
  }

  function inviteError(text) {
    $('pk-invite-error').textContent = text || '';
    $('pk-invite-error').hidden = !text;
  }

  /** A deadline on this clock from a server `expires_at`, kept sane against clock skew. */
  function deadline(expiresAt) {
    const left = Number(expiresAt) - now();
    return Date.now() + (left > 0 && left <= 10 * INVITE_TTL_MS ? left : INVITE_TTL_MS);
  }

  function setOutgoing(invite) {
    clearOutgoing();
    state.outgoing = invite;
    const tick = () => {
      const left = invite.deadline - Date.now();
      if (left <= -3000) { // no answer, and no event saying so
        clearOutgoing();
        inviteStatus(`${invite.opponent} did not answer.`);
        return;
      }
      inviteStatus(`Invited ${invite.opponent} — waiting for an answer… ${Math.max(0, Math.ceil(left / 1000))} s`);
    };
    tick();
    invite.timer = setInterval(tick, 250);
    setInviting();
  }

  function clearOutgoing() {
    if (state.outgoing) clearInterval(state.outgoing.timer);
    state.outgoing = null;
    inviteStatus('');
    setInviting();
  }

  /** A `pk` event saying an invite was declined or expired. */
  function answered(b) {
    if (state.incoming && state.incoming.pk === b.pk) clearIncoming();
    if (!state.outgoing || state.outgoing.pk !== b.pk) return;
    const { opponent } = state.outgoing;
    clearOutgoing();
    const text = b.state === 'declined' ? `${opponent} declined your PK invite.` : `${opponent} did not answer your PK invite in time.`;
    inviteStatus(text);
    toast(text);
  }

  function showIncoming(e) {
    clearIncoming();
    const invite = { pk: e.pk, from: e.from, seconds: e.seconds, deadline: deadline(e.expires_at) };
    state.incoming = invite;
    const length = Number(e.seconds) ? formatDuration(e.seconds) : '';
    $('pk-incoming-text').textContent = `${e.from} challenges you to a ${length ? `${length} ` : ''}PK battle!`;
    $('pk-incoming').dataset.pk = e.pk;
    $('pk-accept').disabled = false;
    $('pk-decline').disabled = false;
    $('pk-incoming').hidden = false;
    const tick = () => {
      const left = invite.deadline - Date.now();
      $('pk-incoming-countdown').textContent = `${Math.max(0, Math.ceil(left / 1000))} s`;
      if (left <= 0) {
        clearIncoming();
        toast(`${e.from}’s PK invite expired.`);
      }
    };
    tick();
    invite.timer = setInterval(tick, 250);
  }

  function clearIncoming() {
    if (state.incoming) clearInterval(state.incoming.timer);
    state.incoming = null;
    $('pk-incoming').hidden = true;
    delete $('pk-incoming').dataset.pk;
  }

  const answerErrors = {
    not_found: 'That PK invite no longer exists.',
    forbidden: 'That PK invite is not yours to answer.',
    conflict: 'That PK invite has expired or was already answered.',
  };

  async function answer(type) {
    const invite = state.incoming;
    if (!invite) return;
    $('pk-accept').disabled = true;
    $('pk-decline').disabled = true;
    try {
      const ok = await ws.request({ type, pk: invite.pk });
      clearIncoming();
      if (type === 'pk_decline') { toast(`You declined ${invite.from}’s PK invite.`); return; }
      if (Number.isFinite(ok.ends_at) && Number(invite.seconds)) {
        // The battle started at the server's now: its clock against this one.
        state.offset = ok.ends_at - Number(invite.seconds) * 1000 - Date.now();
      }
      // The `running` events show the battle; should the first be slow, ask for it.
      await sleep(2000);
      if (!state.battle && !state.ended.has(invite.pk)) check(invite.pk);
    } catch (e) {
      if (e.code === 'not_found' || e.code === 'forbidden' || e.code === 'conflict') clearIncoming();
      else { $('pk-accept').disabled = false; $('pk-decline').disabled = false; }
      showError(e, answerErrors);
    }
  }

  /** A sentence for a refused `pk_invite`. */
  function inviteRefusal(e, opponent) {
    const server = e && e.message ? sentence(e.message) : '';
    const wait = e && Number.isFinite(e.retry_after_ms) ? ` Try again in ${formatDuration(Math.ceil(e.retry_after_ms / 1000))}.` : '';
    return describeError(e, {
      bad_request: server || 'Check the room and the length of the battle.',
      forbidden: server || 'You can only invite from your own room.',
      not_found: `${opponent} is not live right now.`,
      conflict: 'You or they are already in a PK battle or have an invite waiting.',
      rate_limited: `${server || 'You have started too many PK battles for now.'}${wait}`,
    });
  }

  if (broadcaster) {
    panel.hidden = false;
    ws.on('pk_invite', (e) => {
      if (!e.pk) return; // private to this broadcaster, whatever room it names
      showIncoming(e);
      toast(`${e.from} invites you to a PK battle!`);
    });
    for (const input of ['pk-invite-room', 'pk-invite-seconds']) $(input).addEventListener('input', () => inviteError(''));
    $('pk-accept').addEventListener('click', () => answer('pk_accept'));
    $('pk-decline').addEventListener('click', () => answer('pk_decline'));
    $('pk-invite-form').addEventListener('submit', async (ev) => {
      ev.preventDefault();
      inviteError('');
      const opponent = $('pk-invite-room').value.trim().toLowerCase();
      const seconds = Number($('pk-invite-seconds').value);
      if (!ROOM_RE.test(opponent)) { inviteError('Enter the other broadcaster’s room: lowercase letters, digits, - and _.'); return; }
      if (opponent === room) { inviteError('You cannot invite yourself.'); return; }
      if (!Number.isInteger(seconds) || seconds < 1) { inviteError('Enter the length of the battle in whole seconds.'); return; }
      state.sending = true;
      setInviting();
      try {
        const ok = await ws.request({ type: 'pk_invite', room, opponent, seconds });
        if (!state.ended.has(ok.pk) && !(state.battle && state.battle.pk === ok.pk)) {
          setOutgoing({ pk: ok.pk, opponent, deadline: deadline(ok.expires_at) });
        }
      } catch (e) {
        inviteError(inviteRefusal(e, opponent));
      } finally {
        state.sending = false;
        setInviting();
      }
    });
  }

  return {
    get battle() { return state.battle; },
    get pc() { return opponentVideo.pc; },
    get opponent() { return opponentVideo.room; },
    get incoming() { return state.incoming; },
    get outgoing() { return state.outgoing; },
  };
}
