// Moderation, shared by the viewer and broadcaster pages: sending a `mod` action
// over the page's OvationSocket, the room's rules and audit log over HTTP, a
// record as a line of text, the errors moderation adds, and the small "⋯" menu on
// a chat message (Delete / Timeout 10 min / Ban).
import { api } from './api.js';
import { el, toast, showError } from './ui.js';

/** Slow mode's choices in seconds (0: off), as the server accepts them. */
export const SLOW_CHOICES = [0, 3, 10, 30, 60, 120];
/** The menu's timeout. */
export const TIMEOUT_S = 600;

/** Sends `{type:'mod', room, action, ...fields}`; resolves with the ok (the audit record). */
export function sendMod(ws, room, action, fields = {}) {
  return ws.request({ type: 'mod', room, action, ...fields });
}

/** The room's rules and newest `limit` log records (broadcaster, moderators and admins only). */
export function getModeration(token, room, limit = 50) {
  return api(`/api/rooms/${encodeURIComponent(room)}/moderation?limit=${limit}`, { token });
}

/** 45 → "45 s", 600 → "10 min", 7200 → "2 h", 1209600 → "14 days". */
export function formatDuration(seconds) {
  const s = Math.max(0, Math.round(Number(seconds) || 0));
  if (s < 60 || (s < 120 && s % 60 !== 0)) return `${s} s`;
  if (s >= 172800 && s % 86400 === 0) return `${s / 86400} days`;
  if (s % 3600 === 0) return `${s / 3600} h`;
  if (s < 7200) return `${Math.round(s / 60)} min`;
  if (s < 172800) return `${Math.round(s / 3600)} h`;
  return `${Math.round(s / 86400)} days`;
}

/** "10 min" for a timeout's record, from its `seconds` or its `until_ms` − `at_ms`. */
function recordDuration(record) {
  if (record.seconds) return formatDuration(record.seconds);
  if (record.until_ms && record.at_ms) return formatDuration(Math.round((record.until_ms - record.at_ms) / 1000));
  return '';
}

const nameOf = (user, me) => {
  if (!user) return 'someone';
  const name = user.name || user.id;
  return me && user.id === me.id ? `${name} (you)` : name;
};

/**
 * A moderation record (an `ok` to a `mod`, a `moderation` event or a log line) as a
 * short sentence: "Mo timed out Bob for 10 min", "Alice set slow mode to 30 s".
 * `me` (optional): the current user acting is "You", acted on is "Bob (you)".
 */
export function describeRecord(record, me = null) {
  const by = me && record.by && record.by.id === me.id ? 'You' : nameOf(record.by, me);
  const user = nameOf(record.user, me);
  const term = record.term ? ` “${record.term}”` : '';
  let line;
  switch (record.action) {
    case 'delete': line = `${by} deleted a message`; break;
    case 'timeout': line = `${by} timed out ${user}${record.seconds || record.until_ms ? ` for ${recordDuration(record)}` : ''}`; break;
    case 'ban': line = `${by} banned ${user}`; break;
    case 'unban': line = `${by} ended ${me && record.user && record.user.id === me.id ? 'your' : `${nameOf(record.user)}’s`} ban or timeout`; break;
    case 'slow': line = record.seconds ? `${by} set slow mode to ${formatDuration(record.seconds)}` : `${by} turned slow mode off`; break;
    case 'mods_add': line = `${by} made ${user} a moderator`; break;
    case 'mods_remove': line = `${by} removed ${user} as a moderator`; break;
    case 'terms_add': line = `${by} blocked a term${term}`; break;
    case 'terms_remove': line = `${by} unblocked a term${term}`; break;
    case 'suspend_gifts': line = `${by} suspended gifts in this room`; break;
    case 'resume_gifts': line = `${by} resumed gifts in this room`; break;
    case 'assistant': line = `${by} set the assistant's thanks ${record.assistant && record.assistant.thanks ? 'on' : 'off'}`; break;
    default: line = `${by}: ${record.action}`;
  }
  return record.reason ? `${line} (${record.reason})` : line;
}

/** "Slow mode: 30 s", or '' when it is off. */
export const slowModeText = (seconds) => (seconds > 0 ? `Slow mode: ${formatDuration(seconds)}` : '');

/** The server's message as a sentence: capitalized, with a full stop. */
export function sentence(message) {
  const text = String(message || '').trim();
  if (!text) return '';
  const capitalized = text[0].toUpperCase() + text.slice(1);
  return /[.!?…]$/.test(capitalized) ? capitalized : `${capitalized}.`;
}

/**
 * Overrides for showError() on a refused chat, gift or question: a ban or timeout
 * says what the server said (a timeout's time left), slow mode says when to try again.
 */
export function refusalMessages(error) {
  const overrides = {};
  if (!error) return overrides;
  if (error.code === 'banned') {
    overrides.banned = sentence(error.message) || 'You cannot take part in this room right now.';
  }
  if (error.code === 'rate_limited' && /slow mode/i.test(error.message || '')) {
    const wait = Number.isFinite(error.retry_after_ms) ? ` Try again in ${Math.max(1, Math.ceil(error.retry_after_ms / 1000))} s.` : '';
    overrides.rate_limited = `${sentence(error.message)}${wait}`;
  }
  if (error.code === 'forbidden' && error.message) overrides.forbidden = sentence(error.message);
  return overrides;
}

/** Overrides for showError() on a refused `mod`. */
export function modErrorMessages(error) {
  const fallback = {
    forbidden: 'You cannot moderate that here.',
    not_found: 'That is already gone, or the user is unknown here.',
    bad_request: 'The server did not accept that moderation action.',
  };
  const code = error && error.code;
  if (code && fallback[code] && error.message) return { [code]: sentence(error.message) };
  return fallback;
}

/**
 * Runs a menu action on a message (`delete` it, `timeout` or `ban` its author) and
 * says how it went: a toast with the record, or the error as the page shows errors.
 */
export async function moderateMessage(ws, room, action, { id, user }, me = null) {
  const fields = action === 'delete' ? { id } : action === 'timeout' ? { user, seconds: TIMEOUT_S } : { user };
  try {
    const ok = await sendMod(ws, room, action, fields);
    toast(`${describeRecord(ok, me)}.`, 'success');
    return ok;
  } catch (e) {
    showError(e, modErrorMessages(e));
    return null;
  }
}

// ---------- the "⋯" menu on a message ----------

let openMenu = null;

function closeMenu(menu, { focus = false } = {}) {
  if (!menu) return;
  menu.items.hidden = true;
  menu.button.setAttribute('aria-expanded', 'false');
  if (focus) menu.button.focus();
  if (openMenu === menu) openMenu = null;
}

document.addEventListener('click', (e) => {
  if (openMenu && !openMenu.root.contains(e.target)) closeMenu(openMenu);
});
document.addEventListener('keydown', (e) => {
  if (e.key === 'Escape' && openMenu) closeMenu(openMenu, { focus: true });
});

let menuCount = 0;

/**
 * A "⋯" button (`.mod-menu-button`) opening actions (`[data-mod-action]`) on a
 * message by `author` ({id, name}). `onAction(action, button)` runs one; Timeout and
 * Ban are left out for the room's broadcaster (they cannot be restricted).
 */
export function modMenu({ author, room, onAction }) {
  const id = `mod-menu-${++menuCount}`;
  const button = el('button', {
    type: 'button', className: 'mod-menu-button secondary small', title: 'Moderate',
    'aria-label': `Moderate ${author.name}’s message`, 'aria-haspopup': 'true', 'aria-expanded': 'false', 'aria-controls': id,
  }, '⋯');
  const actions = [['delete', 'Delete']];
  if (author.id !== room) actions.push(['timeout', `Timeout ${formatDuration(TIMEOUT_S)}`], ['ban', 'Ban']);
  const items = el('span', { id, className: 'mod-menu-items', role: 'group', 'aria-label': `Moderate ${author.name}’s message` },
    ...actions.map(([action, label]) => el('button', {
      type: 'button', className: `small mod-item${action === 'delete' ? ' secondary' : ' danger'}`, dataset: { modAction: action },
    }, label)));
  items.hidden = true;
  const root = el('span', { className: 'mod-menu' }, button, items);
  const menu = { root, button, items };
  button.addEventListener('click', () => {
    if (!items.hidden) { closeMenu(menu); return; }
    closeMenu(openMenu);
    items.hidden = false;
    button.setAttribute('aria-expanded', 'true');
    openMenu = menu;
    items.querySelector('button').focus();
  });
  items.addEventListener('click', async (e) => {
    const item = e.target.closest('[data-mod-action]');
    if (!item) return;
    closeMenu(menu);
    item.disabled = true;
    try { await onAction(item.dataset.modAction, item); } finally { item.disabled = false; }
  });
  return root;
}

/**
 * Adds or removes the moderation menus of a chat list's messages by others
 * (`li[data-id][data-from]`), as `on` says. `onAction(action, {id, user})`.
 */
export function syncMenus(list, { on, me, room, onAction }) {
  for (const li of list.querySelectorAll('li[data-id][data-from]')) {
    const menu = li.querySelector(':scope > .mod-menu');
    const mine = me && li.dataset.from === me.id;
    if (on && !mine && !menu) attachMenu(li, { room, onAction });
    else if ((!on || mine) && menu) menu.remove();
  }
}

/** Adds the menu to one message element (`data-id`, `data-from`, `data-from-name`). */
export function attachMenu(li, { room, onAction }) {
  const author = { id: li.dataset.from, name: li.dataset.fromName || li.dataset.from };
  li.append(modMenu({ author, room, onAction: (action, item) => onAction(action, { id: li.dataset.id, user: author.id, item }) }));
}

/** Removes every element of `root` showing the event `id` (`[data-id]`); how many. */
export function removeEvent(root, id) {
  let removed = 0;
  for (const node of root.querySelectorAll('[data-id]')) {
    if (node.dataset.id === id) { node.remove(); removed++; }
  }
  return removed;
}
