// Small DOM helpers, readable error sentences and the toast region.
export const $ = (id) => document.getElementById(id);

/** el('li', {className: 'x', dataset: {id: 1}}, 'text', child) */
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === 'dataset') Object.assign(node.dataset, value);
    else if (key.startsWith('aria-') || key === 'role' || key === 'for') node.setAttribute(key, value);
    else node[key] = value;
  }
  for (const child of children) if (child !== null && child !== undefined && child !== false) node.append(child);
  return node;
}

const MESSAGES = {
  bad_request: 'The server did not accept that — check what you entered.',
  unauthorized: 'Sign in first to do that.',
  forbidden: 'You are not allowed to do that here.',
  not_found: 'That could not be found — it may have ended.',
  not_joined: 'You are not in this room yet; try again in a moment.',
  rate_limited: 'Slow down… you are sending too fast. Try again in a few seconds.',
  insufficient_funds: 'Not enough coins — top up first.',
  in_debt: 'You owe coins from a refunded purchase — buy coins to repay them first.',
  too_large: 'That is too long — please shorten it.',
  conflict: 'That was already done.',
  exhausted: 'Too late — nothing is left.',
  unavailable: 'The connection was lost; reconnecting… please try again.',
  internal: 'Something went wrong on the server. Please try again.',
};

/** A sentence for an error from the server, fetch or anything else; `overrides` maps codes to sentences. */
export function describeError(error, overrides = {}) {
  if (error && error.gaveUp) return `Payments are still unavailable after ${error.retries} retries — please try again later.`;
  const code = error && error.code;
  if (code && overrides[code]) return overrides[code];
  if (code && MESSAGES[code]) return MESSAGES[code];
  if (error && error.name === 'NotAllowedError') return 'Camera or microphone access was refused. Allow it in the browser settings.';
  if (error && error.name === 'NotFoundError') return 'No camera or microphone was found.';
  return (error && error.message) || 'Something went wrong.';
}

/** Shows a short message in #toasts (role="status", aria-live="polite"). */
export function toast(message, kind = 'info', ms = 5000) {
  let region = document.getElementById('toasts');
  if (!region) {
    region = el('div', { id: 'toasts', role: 'status', 'aria-live': 'polite' });
    document.body.append(region);
  }
  const item = el('p', { className: `toast toast-${kind}` }, message);
  region.append(item);
  while (region.children.length > 4) region.firstChild.remove();
  setTimeout(() => item.remove(), ms);
  return item;
}

export const showError = (error, overrides) => toast(describeError(error, overrides), 'error', 6000);

export const formatCoins = (n) => Number(n).toLocaleString('en-US');

const EMOJI = { heart: '❤️', rose: '🌹', applause: '👏', star: '⭐', crown: '👑', fireworks: '🎆', rocket: '🚀', castle: '🏰' };
export const stickerEmoji = (id) => EMOJI[id] || '🎁';
