// HTTP helpers and the signed-in identity (kept in sessionStorage).
const TOKEN_KEY = 'ovation.token';

export function getToken() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  const user = token && decodeToken(token);
  if (!user) return null;
  if (user.exp && user.exp * 1000 < Date.now()) { signOut(); return null; }
  return token;
}

/** The user a token names: {id, name, role, exp}, or null. The server verifies it; we only read it. */
export function decodeToken(token) {
  try {
    const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const bytes = Uint8Array.from(atob(part + '='.repeat((4 - (part.length % 4)) % 4)), (c) => c.charCodeAt(0));
    const claims = JSON.parse(new TextDecoder().decode(bytes));
    return { id: claims.sub, name: claims.name || claims.sub, role: claims.role || 'viewer', exp: claims.exp };
  } catch {
    return null;
  }
}

export function currentUser() {
  const token = getToken();
  return token ? decodeToken(token) : null;
}

export function signOut() {
  sessionStorage.removeItem(TOKEN_KEY);
}

/** Turns a display name into a valid user id ([a-z0-9_-]{1,64}). */
export function idFromName(name) {
  const id = name.normalize('NFKD').toLowerCase().replace(/[^a-z0-9_-]+/g, '-').replace(/^-+|-+$/g, '').slice(0, 64);
  return id || `user-${Math.random().toString(36).slice(2, 8)}`;
}

export async function signIn(name, role) {
  const user = idFromName(name);
  const { token } = await api('/api/dev/token', { method: 'POST', body: { user, name, role } });
  sessionStorage.setItem(TOKEN_KEY, token);
  return decodeToken(token);
}

/** A fresh idempotency key (8..=64 chars). */
export function newKey() {
  if (crypto.randomUUID) return crypto.randomUUID();
  return Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, '0')).join('');
}

/** A server fault's retry hint in ms: the body's `retry_after_ms`, else `Retry-After` (seconds). */
function retryAfterMs(res, data) {
  if (data && Number.isFinite(data.retry_after_ms)) return data.retry_after_ms;
  const header = res.headers.get('Retry-After');
  const seconds = header === null || header.trim() === '' ? NaN : Number(header);
  return Number.isFinite(seconds) && seconds >= 0 ? seconds * 1000 : undefined;
}

/**
 * fetch() with JSON in and out. Throws {code, message, status} on failure,
 * with the protocol's error code when the server gave one, and `retry_after_ms`
 * when the server asked for a retry later.
 */
export async function api(path, { method = 'GET', body, token } = {}) {
  const headers = {};
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (token) headers.Authorization = `Bearer ${token}`;
  let res;
  try {
    res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch {
    throw { code: 'unavailable', message: 'The server could not be reached.', status: 0 };
  }
  const text = await res.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { /* not JSON */ }
  if (!res.ok) throw failure(res, text, data);
  return data;
}

/** The {code, message, status[, retry_after_ms]} thrown for a response that is not ok. */
function failure(res, text, data) {
  const fallback = { 401: 'unauthorized', 403: 'forbidden', 404: 'not_found', 409: 'conflict', 413: 'too_large', 429: 'rate_limited' };
  const retryAfter = retryAfterMs(res, data);
  return {
    code: (data && data.code) || fallback[res.status] || (res.status >= 500 ? 'unavailable' : 'bad_request'),
    message: (data && data.message) || text || res.statusText,
    status: res.status,
    ...(retryAfter === undefined ? {} : { retry_after_ms: retryAfter }),
  };
}

/** GET `path` with the token as a file of type `accept`: a Blob; throws like api(). */
async function download(path, { token, accept }) {
  const headers = { Accept: accept };
  if (token) headers.Authorization = `Bearer ${token}`;
  let res;
  try {
    res = await fetch(path, { headers });
  } catch {
    throw { code: 'unavailable', message: 'The server could not be reached.', status: 0 };
  }
  if (!res.ok) {
    const text = await res.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch { /* not JSON */ }
    throw failure(res, text, data);
  }
  return res.blob();
}

export const getCatalog = () => api('/api/catalog');
export const getRooms = () => api('/api/rooms');
export const getLeaderboard = (room) => api(`/api/rooms/${encodeURIComponent(room)}/leaderboard`);
export const getWallet = (token) => api('/api/me/wallet', { token });
export const setDailyLimit = (token, dailyCoins) => api('/api/me/limits', { method: 'PUT', token, body: { daily_coins: dailyCoins } });
export const topUp = (token, coins, key = newKey()) => api('/api/me/topup', { method: 'POST', token, body: { coins, key } });
export const getCoinPacks = () => api('/api/coin-packs');
export const buyInDevStore = (token, pack) => api('/api/dev/store', { method: 'POST', token, body: { pack } });
export const getEarnings = (token) => api('/api/me/earnings', { token });
export const getPayouts = (token) => api('/api/me/payouts', { token });
/** Asks for a payout of `amount` minor units (1/100 coin) of the available earnings. */
export const requestPayout = (token, amount, key = newKey()) => api('/api/me/payouts', { method: 'POST', token, body: { amount, key } });
/** The statement of UTC days `from`..=`to` (YYYY-MM-DD) as a CSV Blob. */
export const getStatementCsv = (token, from, to) =>
  download(`/api/me/statement?from=${encodeURIComponent(from)}&to=${encodeURIComponent(to)}`, { token, accept: 'text/csv' });
