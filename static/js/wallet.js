// A wallet's states as both pages show them: what the user owes after a refund,
// today's spending against the daily cap, and a minor's account. A page shows what it
// has elements for (ids `debt`, `minor`, `spending`, `spent-today`, `daily-cap-of`,
// `cap-reached`); the others are skipped.
import { formatCoins } from './ui.js';

const show = (id, text) => {
  const element = document.getElementById(id);
  if (!element) return;
  element.hidden = !text;
  if (text) element.textContent = text;
};

/** A refund took back coins already spent: paid actions wait for a purchase. */
export function showDebt(debt) {
  show('debt', debt ? `You owe ${formatCoins(debt)} coins from a refunded purchase. Buy coins to repay them; until then gifts, questions and red packets are paused.` : '');
}

/** What was spent today against the daily cap (the platform's or the user's own, whichever is lower). */
export function showSpending({ spent_today: spent, daily_cap: cap }) {
  const spending = document.getElementById('spending');
  if (spending) spending.hidden = false;
  const spentToday = document.getElementById('spent-today');
  if (spentToday) spentToday.textContent = formatCoins(spent);
  const of = document.getElementById('daily-cap-of');
  if (of) of.textContent = cap === null ? '' : ` of ${formatCoins(cap)} coins`;
  const reached = cap !== null && spent >= cap;
  show('cap-reached', reached ? `You reached today’s limit of ${formatCoins(cap)} coins. Gifts, questions and red packets resume at midnight UTC.` : '');
}

/** A minor's token: watching, streaming and chat only. */
export function showMinor(user) {
  show('minor', user && user.minor ? 'This is a minor’s account: you can watch, stream and chat, but gifts, questions, red packets and buying coins are off.' : '');
}
