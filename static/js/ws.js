// A small Ovation WebSocket client: reconnects with backoff, rejoins its rooms
// with `since` so nothing is missed or shown twice, and matches replies by `rid`.
//
//   const ws = new OvationSocket(token);
//   ws.on('chat', (event, replay) => ...);   // any event type; replay = came in a join reply
//   ws.on('joined', (ok) => ...);            // after each (re)join, before its events
//   ws.on('reset', ({room}) => ...);         // history could not be recovered: clear and redraw
//   ws.on('status', (s) => ...);             // 'connecting' | 'open' | 'closed'
//   ws.on('error', (err) => ...);            // errors without a pending request
//   ws.connect(); await ws.join('alice'); await ws.request({type: 'chat', room, text});

export class OvationSocket {
  constructor(token, { path = '/ws' } = {}) {
    this.token = token || null;
    this.path = path;
    this.ws = null;
    this.rid = 0;
    this.pending = new Map();
    this.handlers = new Map();
    this.rooms = new Map(); // room -> {epoch, seq} | null
    this.backoff = 500;
    this.openedAt = 0;
    this.stopped = false;
    this.waiters = [];
    this.timer = null;
    this.joining = new Map(); // room -> in-flight join promise
  }

  on(type, fn) {
    if (!this.handlers.has(type)) this.handlers.set(type, new Set());
    this.handlers.get(type).add(fn);
    return () => this.handlers.get(type).delete(fn);
  }

  emit(type, ...args) {
    for (const fn of this.handlers.get(type) || []) {
      try { fn(...args); } catch (e) { console.error(e); }
    }
  }

  get isOpen() { return !!this.ws && this.ws.readyState === WebSocket.OPEN; }

  connect() {
    this.stopped = false;
    clearTimeout(this.timer);
    const proto = location.protocol === 'https:' ? 'wss' : 'ws';
    const query = this.token ? `?token=${encodeURIComponent(this.token)}` : '';
    const ws = new WebSocket(`${proto}://${location.host}${this.path}${query}`);
    this.ws = ws;
    this.emit('status', 'connecting');
    ws.onopen = () => {
      if (this.ws !== ws) return;
      this.openedAt = Date.now();
      this.emit('status', 'open');
      // Joins go out first, so anything queued while offline reaches a joined room.
      for (const room of this.rooms.keys()) this.sendJoin(room).catch((e) => { if (!e.lost) this.emit('error', e); });
      const waiters = this.waiters.splice(0);
      waiters.forEach((w) => w.resolve());
    };
    ws.onmessage = (e) => {
      let message;
      try { message = JSON.parse(e.data); } catch { return; }
      this.dispatch(message);
    };
    ws.onclose = (e) => {
      if (this.ws !== ws) return;
      this.ws = null;
      const lost = { code: 'unavailable', message: 'Connection lost.', lost: true };
      for (const p of this.pending.values()) { clearTimeout(p.timer); p.reject(lost); }
      this.pending.clear();
      this.joining.clear();
      this.emit('status', 'closed', e.code);
      if (this.stopped) return;
      if (Date.now() - this.openedAt > 10000) this.backoff = 500;
      const delay = this.backoff * (0.75 + Math.random() / 2);
      this.backoff = Math.min(this.backoff * 2, 15000);
      this.timer = setTimeout(() => this.connect(), delay);
    };
  }

  close() {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.ws) this.ws.close(1000);
  }

  /** Resolves when the socket is open (waits up to `ms`). */
  whenOpen(ms = 8000) {
    if (this.isOpen) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const waiter = { resolve: () => { clearTimeout(t); resolve(); } };
      const t = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== waiter);
        reject({ code: 'unavailable', message: 'Not connected.' });
      }, ms);
      this.waiters.push(waiter);
    });
  }

  /** Sends a message with a fresh rid; resolves with the `ok`, rejects with the `error`. */
  async request(message, { timeout = 15000 } = {}) {
    await this.whenOpen();
    return this.send(message, timeout);
  }

  send(message, timeout = 15000) {
    const rid = ++this.rid;
    return new Promise((resolve, reject) => {
      if (!this.isOpen) { reject({ code: 'unavailable', message: 'Not connected.', lost: true }); return; }
      const timer = setTimeout(() => {
        this.pending.delete(String(rid));
        reject({ code: 'unavailable', message: 'No answer from the server.' });
      }, timeout);
      this.pending.set(String(rid), { resolve, reject, timer });
      this.ws.send(JSON.stringify({ ...message, rid }));
    });
  }

  /** Joins a room (and rejoins it after every reconnect). Resolves with the join `ok`. */
  async join(room) {
    if (!this.rooms.has(room)) this.rooms.set(room, null);
    if (!this.ws) this.connect();
    await this.whenOpen();
    return this.sendJoin(room);
  }

  async leave(room) {
    this.rooms.delete(room);
    if (this.isOpen) await this.send({ type: 'leave', room }).catch(() => {});
  }

  sendJoin(room) {
    if (this.joining.has(room)) return this.joining.get(room);
    const promise = this.doJoin(room).finally(() => {
      if (this.joining.get(room) === promise) this.joining.delete(room);
    });
    this.joining.set(room, promise);
    return promise;
  }

  async doJoin(room) {
    const since = this.rooms.get(room);
    const ok = await this.send({ type: 'join', room, ...(since ? { since } : {}) });
    if (!this.rooms.has(room)) return ok; // left meanwhile
    const events = ok.events || [];
    if (!ok.recovered || !since) {
      this.emit('reset', { room });
      this.rooms.set(room, { epoch: ok.epoch, seq: events.length ? events[0].seq - 1 : ok.seq });
    }
    this.emit('joined', ok);
    for (const event of events) this.event(event, true);
    const position = this.rooms.get(room);
    if (position && ok.seq > position.seq) position.seq = ok.seq;
    return ok;
  }

  dispatch(m) {
    if ((m.type === 'ok' || m.type === 'error') && m.rid !== null && m.rid !== undefined) {
      const p = this.pending.get(String(m.rid));
      if (p) {
        this.pending.delete(String(m.rid));
        clearTimeout(p.timer);
        if (m.type === 'ok') p.resolve(m); else p.reject(m);
      }
      return;
    }
    if (m.type === 'error') return this.emit('error', m);
    if (m.type === 'ok') return;
    this.event(m, false);
  }

  event(m, replay) {
    if (typeof m.seq === 'number' && m.room) {
      const position = this.rooms.get(m.room);
      if (!position) return; // not (or no longer) in that room
      if (m.seq <= position.seq) return; // already seen
      position.seq = m.seq;
    }
    this.emit(m.type, m, replay);
    this.emit('*', m, replay);
  }
}
