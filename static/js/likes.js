// Likes (docs/pk.md), shared by the viewer and broadcaster pages: a heart button whose
// taps go out batched (one `like` with the taps of BATCH_MS, at most MAX_BATCH, waiting
// out `rate_limited`), floating hearts for the room's coalesced `likes` events (at most
// one a second: `recent` taps, up to HEARTS_PER_EVENT hearts), and the room's total.
//
//   setupLikes({ ws, room, token, button, total, layer });   // button: null on a page that only shows likes
import { el, toast, showError, formatCoins } from './ui.js';
import { refusalMessages } from './moderation.js';

export const BATCH_MS = 250;
export const MAX_BATCH = 15; // the server's limit for one message's `count`
export const HEARTS_PER_EVENT = 20;
const MAX_PENDING = 4 * MAX_BATCH; // taps kept while waiting out a rate limit; more are dropped
const MAX_HEARTS = 60; // hearts on screen at once
const OWN_MS = 3000; // how long one's own animated taps wait to be counted in a `likes` event

const COLORS = ['#ff4d6d', '#ff7aa2', '#ffb020', '#c77dff', '#ff5e3a', '#ff85c0'];

export function setupLikes({ ws, room, token, button = null, total, layer }) {
  const state = {
    pending: 0, // taps not sent yet
    timer: null,
    inFlight: false,
    blockedUntil: 0, // a rate limit's end (Date.now() clock)
    own: 0, // sent taps already animated here, not yet counted in a `likes` event
    ownAt: 0,
    total: 0,
    shown: 0, // hearts animated so far (tests read layer.dataset.shown)
  };
  const reduced = window.matchMedia && window.matchMedia('(prefers-reduced-motion: reduce)').matches;

  function setTotal(n) {
    const value = Math.max(0, Number(n) || 0);
    state.total = value;
    if (!total) return;
    total.textContent = formatCoins(value);
    total.dataset.total = String(value);
  }

  /** One floating heart, starting after `delay` ms; `mine`: a tap on this page. */
  function heart(delay = 0, mine = false) {
    if (!layer) return;
    const height = layer.clientHeight || 240;
    const node = el('span', { className: mine ? 'heart mine' : 'heart', 'aria-hidden': 'true' }, '♥');
    const duration = 1800 + Math.random() * 900;
    node.style.setProperty('--x', `${10 + Math.random() * 60}%`);
    node.style.setProperty('--drift', `${Math.round((Math.random() - 0.5) * 80)}px`);
    node.style.setProperty('--rise', `${Math.round(height * (0.6 + Math.random() * 0.35))}px`);
    node.style.setProperty('--size', `${(mine ? 1.8 : 1.2 + Math.random() * 0.8).toFixed(2)}rem`);
    node.style.color = COLORS[Math.floor(Math.random() * COLORS.length)];
    node.style.animationDuration = `${Math.round(duration)}ms`;
    node.style.animationDelay = `${Math.round(delay)}ms`;
    layer.append(node);
    state.shown++;
    layer.dataset.shown = String(state.shown);
    while (layer.children.length > MAX_HEARTS) layer.firstChild.remove();
    const remove = () => node.remove();
    node.addEventListener('animationend', remove);
    setTimeout(remove, delay + duration + 500);
  }

  /** `n` hearts spread over the second until the next event. */
  function hearts(n) {
    const count = Math.min(n, reduced ? 3 : HEARTS_PER_EVENT);
    for (let i = 0; i < count; i++) heart(count > 1 ? (i * 900) / count + Math.random() * 60 : 0);
  }

  ws.on('likes', (e) => {
    if (e.room && e.room !== room) return;
    if (Number.isFinite(e.total)) setTotal(e.total);
    const recent = Math.max(0, Number(e.recent) || 0);
    if (state.own && Date.now() - state.ownAt > OWN_MS) state.own = 0;
    // One's own taps were animated when tapped: animate only the others'.
    const others = Math.max(0, recent - state.own);
    state.own = Math.max(0, state.own - recent);
    if (others) hearts(others);
  });

  ws.on('joined', (ok) => {
    if (ok.room && ok.room !== room) return;
    const likes = ok.likes;
    if (Number.isFinite(likes)) setTotal(likes);
    else if (likes && Number.isFinite(likes.total)) setTotal(likes.total);
  });

  // The total starts again at 0 when the room goes live.
  ws.on('stream', (e, replay) => {
    if (!replay && e.live && (!e.room || e.room === room)) setTotal(0);
  });

  function schedule(ms) {
    if (state.timer || state.inFlight || !state.pending) return;
    state.timer = setTimeout(flush, Math.max(ms, state.blockedUntil - Date.now()));
  }

  async function flush() {
    state.timer = null;
    if (!state.pending) return;
    const wait = state.blockedUntil - Date.now();
    if (wait > 0) { schedule(wait); return; }
    const count = Math.min(state.pending, MAX_BATCH);
    state.pending -= count;
    state.inFlight = true;
    try {
      await ws.request({ type: 'like', room, count });
      state.own += count;
      state.ownAt = Date.now();
    } catch (e) {
      if (e.code === 'rate_limited') {
        // Keep the taps and send them once the limit allows.
        const after = Number.isFinite(e.retry_after_ms) ? Math.max(e.retry_after_ms, 100) : 1000;
        state.blockedUntil = Date.now() + after;
        state.pending = Math.min(state.pending + count, MAX_PENDING);
      } else if (e.code === 'unavailable') {
        // The connection dropped: those taps are lost, which is fine for a free heart.
      } else {
        state.pending = 0;
        showError(e, {
          ...refusalMessages(e),
          forbidden: 'Only signed-in viewers can send likes.',
          not_joined: 'Still joining the room — try again in a moment.',
        });
      }
    } finally {
      state.inFlight = false;
      schedule(BATCH_MS);
    }
  }

  function tap() {
    if (!token) { toast('Sign in to send likes.', 'error'); return; }
    if (state.pending >= MAX_PENDING) return;
    state.pending++;
    heart(0, true);
    if (button) {
      button.classList.remove('tapped');
      void button.offsetWidth; // restart the pulse
      button.classList.add('tapped');
    }
    schedule(BATCH_MS);
  }

  if (button) {
    button.addEventListener('click', tap);
    button.addEventListener('animationend', () => button.classList.remove('tapped'));
  }
  setTotal(0);

  return {
    tap,
    get total() { return state.total; },
    get pending() { return state.pending; },
    get shown() { return state.shown; },
  };
}
