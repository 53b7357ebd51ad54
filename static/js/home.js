// Home: dev sign-in and the list of rooms.
import { currentUser, signIn, signOut, getRooms } from './api.js';
import { $, el, showError } from './ui.js';

function render() {
  const user = currentUser();
  $('whoami').hidden = !user;
  $('whoami').textContent = user ? `Signed in as ${user.name} (${user.role})` : '';
  $('signin').hidden = !!user;
  $('signed-in').hidden = !user;
  $('go-live-link').hidden = !user || user.role !== 'broadcaster';
}

async function loadRooms() {
  try {
    const { rooms } = await getRooms();
    rooms.sort((a, b) => (b.live - a.live) || (b.viewers - a.viewers) || a.room.localeCompare(b.room));
    $('rooms').replaceChildren(...rooms.map((r) => el('li', {},
      el('a', { className: 'room-link', href: `watch.html?room=${encodeURIComponent(r.room)}` },
        el('span', { className: 'room-name' }, r.room),
        el('span', { className: r.live ? 'badge live' : 'badge' }, r.live ? 'LIVE' : 'offline'),
        el('span', { className: 'muted' }, `${r.viewers} watching`)))));
    $('rooms-empty').hidden = rooms.length > 0;
  } catch (e) {
    // keep the last list; the next refresh may work
  }
}

$('signin').addEventListener('submit', async (e) => {
  e.preventDefault();
  const name = $('signin-name').value.trim();
  if (!name) return;
  $('signin-submit').disabled = true;
  try {
    const user = await signIn(name, $('signin-role').value);
    render();
    if (user.role === 'broadcaster') $('go-live-link').focus();
  } catch (err) {
    showError(err, { bad_request: 'That name cannot be used — try letters and digits.', not_found: 'Dev sign-in is turned off on this server.' });
  } finally {
    $('signin-submit').disabled = false;
  }
});

$('signout').addEventListener('click', () => { signOut(); render(); $('signin-name').focus(); });

$('open-room').addEventListener('submit', (e) => {
  e.preventDefault();
  location.href = `watch.html?room=${encodeURIComponent($('room-id').value.trim())}`;
});

render();
loadRooms();
setInterval(loadRooms, 5000);
