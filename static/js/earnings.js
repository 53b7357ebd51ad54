// The broadcaster's earnings panel: earnings by state (held, available, pending, paid),
// a cash-out of everything available, the recent payouts, and a CSV statement of the
// last 30 days. Amounts are minor units (1/100 coin), shown as coins with 2 decimals.
// Elements (live.html): `earnings-panel`, `earn-held`, `earn-available`, `earn-pending`,
// `earn-paid`, `cash-out`, `statement-link`, `payouts-list`, `payouts-empty`.
import { getPayouts, requestPayout, getStatementCsv } from './api.js';
import { $, el, toast, showError } from './ui.js';

/** Minor units as coins with 2 decimals: 1234 → "12.34". */
export const formatMinor = (minor) => (Number(minor) / 100).toFixed(2);

const STATES = ['held', 'available', 'pending', 'paid'];
const STATUS_TEXT = { pending: 'Pending', paid: 'Paid', failed: 'Failed' };
const STATEMENT_DAYS = 30;
const PAYOUTS_SHOWN = 10;

const state = { available: 0, cashingOut: false, payoutsSeen: null, payoutsBusy: false, payoutsAgain: false };
let session = null;

/** The UTC days (YYYY-MM-DD) of the last `days` days, today included: {from, to}. */
export function lastDays(days, now = new Date()) {
  const day = (d) => d.toISOString().slice(0, 10);
  return { from: day(new Date(now.getTime() - (days - 1) * 86400000)), to: day(now) };
}

function setCashOut() {
  const button = $('cash-out');
  button.disabled = state.cashingOut || !(state.available > 0);
  button.textContent = state.cashingOut ? 'Cashing out…'
    : state.available > 0 ? `Cash out ${formatMinor(state.available)}` : 'Cash out';
}

/** Shows GET /api/me/earnings; reloads the payouts when pending or paid moved. */
export function showEarnings(earnings) {
  for (const key of STATES) {
    const minor = Number(earnings[key]) || 0;
    const node = $(`earn-${key}`);
    node.textContent = formatMinor(minor);
    node.dataset.minor = minor;
  }
  state.available = Number(earnings.available) || 0;
  setCashOut();
  $('earnings-panel').hidden = false;
  const seen = `${earnings.pending}/${earnings.paid}`;
  if (session && seen !== state.payoutsSeen) {
    state.payoutsSeen = seen;
    loadPayouts();
  }
}

/** Shows the newest payouts of GET /api/me/payouts. */
export function showPayouts(payouts) {
  const list = $('payouts-list');
  list.replaceChildren(...payouts.slice(0, PAYOUTS_SHOWN).map((p) => {
    const when = new Date(p.requested_ms);
    return el('li', { className: `payout ${p.status}`, dataset: { id: p.payout_id, status: p.status, minor: p.amount } },
      el('strong', { className: 'payout-amount' }, `${formatMinor(p.amount)} coins`), ' ',
      el('span', { className: `badge payout-status ${p.status}` }, STATUS_TEXT[p.status] || p.status), ' ',
      el('time', { className: 'muted', dateTime: when.toISOString() },
        when.toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'short' })));
  }));
  $('payouts-empty').hidden = payouts.length > 0;
}

export async function loadPayouts() {
  if (!session) return;
  if (state.payoutsBusy) { state.payoutsAgain = true; return; }
  state.payoutsBusy = true;
  try {
    showPayouts((await getPayouts(session.token)).payouts);
  } catch (err) {
    if (err.code === 'unauthorized') showError(err, { unauthorized: 'Your sign-in has expired; sign in again.' });
  } finally {
    state.payoutsBusy = false;
    if (state.payoutsAgain) { state.payoutsAgain = false; loadPayouts(); }
  }
}

async function cashOut() {
  const amount = state.available;
  if (state.cashingOut || !(amount > 0)) return;
  state.cashingOut = true;
  setCashOut();
  try {
    // A fresh idempotency key per tap: a second tap asks for a second payout.
    const payout = await requestPayout(session.token, amount);
    toast(`Cash-out of ${formatMinor(payout.amount)} coins requested — it is on its way.`, 'success');
    state.available = 0;
  } catch (err) {
    // The server's own words say what is wrong (the smallest payout, the amount available).
    const own = err && err.message ? `Cash-out refused: ${err.message}` : undefined;
    showError(err, {
      bad_request: own,
      insufficient_funds: own,
      conflict: own,
      unauthorized: 'Your sign-in has expired; sign in again.',
    });
  } finally {
    state.cashingOut = false;
    setCashOut();
    loadPayouts();
    session.refresh();
  }
}

async function downloadStatement() {
  const link = $('statement-link');
  if (link.disabled) return;
  const { from, to } = lastDays(STATEMENT_DAYS);
  link.disabled = true;
  try {
    const blob = await getStatementCsv(session.token, from, to);
    const url = URL.createObjectURL(blob);
    const a = el('a', { href: url, download: `statement-${from}-${to}.csv`, hidden: true });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60000);
  } catch (err) {
    showError(err, { bad_request: err && err.message, unauthorized: 'Your sign-in has expired; sign in again.' });
  } finally {
    link.disabled = false;
  }
}

/**
 * Wires the panel's buttons for the broadcaster with `token`; `refresh()` reloads the
 * earnings (which then calls showEarnings).
 */
export function setupEarnings(token, refresh) {
  session = { token, refresh };
  $('cash-out').addEventListener('click', cashOut);
  $('statement-link').addEventListener('click', downloadStatement);
  setCashOut();
}
