// Ovation viewer page: rooms, chat, and recovery after a dropped connection.
const $ = (id) => document.getElementById(id);
const state = { token: localStorage.getItem('ovation.token'), name: localStorage.getItem('ovation.name'),
  ws: null, room: null, position: { epoch: null, seq: 0 }, rid: 0, pending: new Map(), backoff: 500 };

const MESSAGES = {
  unauthorized: 'Sign in to chat.',
  rate_limited: 'You are sending messages too fast; wait a moment.',
  not_joined: 'Join the room first.',
  too_large: 'That message is too long.',
};

function showProblem(error) {
  $('problem').textContent = error ? (MESSAGES[error.code] || error.message) : '';
}

async function signIn(name) {
  const user = name.toLowerCase().replace(/[^a-z0-9_-]/g, '-').slice(0, 64) || 'viewer';
  const res = await fetch('/api/dev/token', { method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ user, name, role: 'viewer' }) });
  if (!res.ok) throw new Error((await res.json()).message);
  state.token = (await res.json()).token;
  state.name = name;
  localStorage.setItem('ovation.token', state.token);
  localStorage.setItem('ovation.name', name);
  renderWho();
  connect();
}

function renderWho() {
  $('whoami').hidden = !state.name;
  $('whoami').textContent = state.name ? `Signed in as ${state.name}` : '';
  $('signin').hidden = !!state.name;
}

function request(message) {
  const rid = ++state.rid;
  return new Promise((resolve, reject) => {
    state.pending.set(rid, { resolve, reject });
    state.ws.send(JSON.stringify({ ...message, rid }));
  });
}

function connect() {
  if (state.ws) state.ws.close();
  const proto = location.protocol === 'https:' ? 'wss' : 'ws';
  const query = state.token ? `?token=${encodeURIComponent(state.token)}` : '';
  const ws = new WebSocket(`${proto}://${location.host}/ws${query}`);
  state.ws = ws;
  ws.onopen = () => { state.backoff = 500; if (state.room) join(state.room); };
  ws.onmessage = (e) => onMessage(JSON.parse(e.data));
  ws.onclose = () => {
    if (state.ws !== ws) return;
    for (const { reject } of state.pending.values()) reject({ code: 'unavailable', message: 'Connection lost.' });
    state.pending.clear();
    $('room-status').textContent = 'Reconnecting…';
    setTimeout(connect, state.backoff);
    state.backoff = Math.min(state.backoff * 2, 10000);
  };
}

function onMessage(m) {
  if ((m.type === 'ok' || m.type === 'error') && state.pending.has(m.rid)) {
    const { resolve, reject } = state.pending.get(m.rid);
    state.pending.delete(m.rid);
    return m.type === 'ok' ? resolve(m) : reject(m);
  }
  if (m.type === 'error') return showProblem(m);
  if (m.room !== state.room) return;
  if (m.type === 'presence') $('room-status').textContent = `${m.viewers} watching`;
  if (typeof m.seq === 'number') showEvent(m);
}

function showEvent(event) {
  if (event.seq <= state.position.seq) return; // already shown
  state.position.seq = event.seq;
  if (event.type !== 'chat') return;
  const li = document.createElement('li');
  const who = document.createElement('span');
  who.className = 'who';
  who.textContent = event.from.name;
  li.append(who, document.createTextNode(event.text));
  $('feed').append(li);
  $('feed').scrollTop = $('feed').scrollHeight;
}

// Joins a room; after a reconnect, `since` asks the server for exactly what we missed.
async function join(room) {
  const since = state.room === room && state.position.epoch ? { ...state.position } : null;
  if (state.room !== room) $('feed').replaceChildren();
  state.room = room;
  $('room').hidden = false;
  $('room-title').textContent = room;
  try {
    const ok = await request({ type: 'join', room, ...(since ? { since } : {}) });
    if (!ok.recovered) $('feed').replaceChildren();
    const first = ok.events.length ? ok.events[0].seq - 1 : ok.seq;
    state.position = { epoch: ok.epoch, seq: ok.recovered ? since.seq : first };
    ok.events.forEach(showEvent);
    $('room-status').textContent = `${ok.viewers} watching${ok.live ? ' · live' : ''}`;
    showProblem(null);
  } catch (error) { showProblem(error); }
}

async function loadRooms() {
  const { rooms } = await (await fetch('/api/rooms')).json();
  $('rooms').replaceChildren(...rooms.map((r) => {
    const li = document.createElement('li');
    const b = document.createElement('button');
    b.textContent = `${r.room} · ${r.viewers} watching${r.live ? ' · live' : ''}`;
    b.onclick = () => join(r.room);
    li.append(b);
    return li;
  }));
}

$('signin').onsubmit = (e) => { e.preventDefault(); signIn($('name').value.trim()).catch(showProblem); };
$('open-room').onsubmit = (e) => { e.preventDefault(); join($('room-name').value.trim()); };
$('chat').onsubmit = async (e) => {
  e.preventDefault();
  const text = $('chat-text').value.trim();
  if (!text || !state.room) return;
  try { await request({ type: 'chat', room: state.room, text }); $('chat-text').value = ''; showProblem(null); }
  catch (error) { showProblem(error); }
};

renderWho();
connect();
loadRooms();
setInterval(loadRooms, 5000);
