// The /ws connection: snapshot first, then events; on a drop, resume from the last event id
// with backoff; on ws.resync, take a fresh snapshot on the same socket.

import { cmpId } from './store.js';

const PING_EVERY = 20000;
const PONG_TIMEOUT = 10000;
const BACKOFF_MIN = 500;
const BACKOFF_MAX = 8000;

export class Live {
  constructor(store, { checkAuth }) {
    this.store = store;
    this.checkAuth = checkAuth; // resolves false when the session is gone
    this.ws = null;
    this.attempt = 0;
    this.ref = 0;
    this.snapshotBuffer = null;
    this.forceSnapshot = false;
    this.stopped = true;
    this.timers = {};
    this.onOnline = () => this.reconnectNow();
    this.onVisible = () => { if (!document.hidden) this.reconnectNow(); };
  }

  start() {
    this.stopped = false;
    window.addEventListener('online', this.onOnline);
    document.addEventListener('visibilitychange', this.onVisible);
    this.connect();
  }

  stop() {
    this.stopped = true;
    window.removeEventListener('online', this.onOnline);
    document.removeEventListener('visibilitychange', this.onVisible);
    this.clearTimers();
    this.detach(1000, 'logged out');
  }

  clearTimers() {
    for (const key of Object.keys(this.timers)) {
      clearTimeout(this.timers[key]);
      clearInterval(this.timers[key]);
    }
    this.timers = {};
  }

  url() {
    const params = new URLSearchParams();
    if (this.store.lastId && !this.forceSnapshot) params.set('since', this.store.lastId);
    else params.set('snapshot', '1');
    const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
    return `${scheme}//${location.host}/ws?${params}`;
  }

  connect() {
    this.clearTimers();
    const url = this.url();
    const mode = url.includes('since=') ? 'resume' : 'snapshot';
    this.snapshotBuffer = mode === 'snapshot' ? [] : null;
    this.store.setConn({ state: 'connecting', mode, detail: mode === 'resume' ? `resuming after ${this.store.lastId}` : 'loading state', url });
    const ws = new WebSocket(url);
    this.ws = ws;
    ws.onopen = () => {
      if (ws !== this.ws) return;
      this.attempt = 0;
      this.forceSnapshot = false;
      if (mode === 'resume') {
        this.store.setConn({ state: 'live', detail: `resumed after ${this.store.lastId}`, since: Date.now() });
      } else {
        this.store.setConn({ state: 'syncing', detail: 'receiving snapshot' });
      }
      this.timers.ping = setInterval(() => this.ping(), PING_EVERY);
    };
    ws.onmessage = (msg) => { if (ws === this.ws) this.receive(msg.data); };
    ws.onclose = (e) => { if (ws === this.ws) this.down(e.code, e.reason); };
    ws.onerror = () => {}; // onclose follows with the code
  }

  send(op) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
      op.ref = ++this.ref;
      this.ws.send(JSON.stringify(op));
    }
  }

  ping() {
    this.send({ op: 'ping' });
    clearTimeout(this.timers.pong);
    // A half-open connection (Wi-Fi dropped, laptop slept) never fires onclose by itself.
    this.timers.pong = setTimeout(() => this.down(4000, 'no answer to ping'), PONG_TIMEOUT);
  }

  receive(raw) {
    let msg;
    try { msg = JSON.parse(raw); } catch { return; }
    switch (msg.type) {
      case 'node.snapshot':
      case 'gpio.snapshot':
      case 'cluster.snapshot':
        (this.snapshotBuffer ||= []).push(msg);
        return;
      case 'ws.snapshot.end':
        this.store.loadSnapshot(this.snapshotBuffer || [], msg.id);
        this.snapshotBuffer = null;
        this.store.setConn({ state: 'live', detail: `snapshot of ${msg.count} objects at ${msg.id}`, since: Date.now() });
        return;
      case 'ws.resync':
        // The stream no longer holds everything we missed: re-read all state.
        this.store.notice('Missed too many events while away; state reloaded.', 'warn');
        this.snapshotBuffer = [];
        this.store.setConn({ state: 'syncing', mode: 'resync', detail: 'reloading state' });
        this.send({ op: 'subscribe', snapshot: true });
        return;
      case 'ws.pong':
        clearTimeout(this.timers.pong);
        return;
      case 'ws.ack':
        return;
      case 'ws.coalesced':
        this.store.notice(`Fell behind: ${msg.dropped} intermediate updates skipped, latest state shown.`, 'warn');
        return;
      case 'ws.error':
        this.store.notice(`Server: ${msg.message}`, 'error');
        return;
      default:
        if (msg.id && msg.type) {
          if (this.store.lastId && cmpId(msg.id, this.store.lastId) <= 0) return;
          this.store.apply(msg);
        }
    }
  }

  detach(code, reason) {
    const ws = this.ws;
    this.ws = null;
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = null;
      try { ws.close(code >= 4000 || code === 1000 ? code : 1000, reason); } catch { /* already closed */ }
    }
  }

  async down(code, reason) {
    this.clearTimers();
    this.detach(4000, 'reconnecting');
    if (this.stopped) return;
    if (code === 4400) this.forceSnapshot = true; // the server refused our resume position
    const delay = Math.min(BACKOFF_MAX, BACKOFF_MIN * 2 ** this.attempt) * (0.8 + Math.random() * 0.4);
    this.attempt += 1;
    const retryAt = Date.now() + delay;
    this.store.setConn({ state: 'down', detail: reason || `closed (${code})`, retryAt, attempt: this.attempt });
    this.timers.retry = setTimeout(() => this.retry(), delay);
    this.timers.tick = setInterval(() => this.store.changed('conn'), 1000);
  }

  async retry() {
    if (this.stopped) return;
    let ok = true;
    try {
      ok = await this.checkAuth();
    } catch {
      ok = true; // the controller is unreachable: keep trying the socket
    }
    if (!this.stopped && ok) this.connect();
  }

  reconnectNow() {
    if (!this.stopped && this.store.conn.state === 'down') {
      this.attempt = 0;
      this.retry();
    }
  }
}
