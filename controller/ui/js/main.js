// Boot, login, the page shell (navigation, connection indicator, user) and the router.

import * as api from './api.js';
import { h, replace } from './dom.js';
import { Live } from './live.js';
import { Store } from './store.js';
import * as auditView from './views/audit.js';
import * as clustersView from './views/clusters.js';
import * as eventsView from './views/events.js';
import * as gpioView from './views/gpio.js';
import * as nodeView from './views/node.js';
import * as nodesView from './views/nodes.js';
import * as tokensView from './views/tokens.js';

const ROUTES = [
  [/^#\/nodes\/([^/]+)$/, nodeView],
  [/^#\/nodes$/, nodesView],
  [/^#\/gpio(?:\/([^/]+))?$/, gpioView],
  [/^#\/clusters(?:\/([^/]+))?$/, clustersView],
  [/^#\/events$/, eventsView],
  [/^#\/access$/, tokensView],
  [/^#\/audit$/, auditView],
];
const NAV = [['#/nodes', 'Nodes'], ['#/gpio', 'GPIO'], ['#/clusters', 'Clusters'], ['#/events', 'Events']];
const HISTORY_EVENTS = 500;
const REFRESH_NODES_MS = 15000;
const PENDING_CHECK_MS = 2000;

const root = document.getElementById('app');
let app = null;

class App {
  constructor(user) {
    this.store = new Store();
    this.store.user = user;
    this.store.onResourceChanged = (d) => this.resourceChanged(d);
    this.live = new Live(this.store, { checkAuth: () => this.checkAuth() });
    this.view = null;
    this.timers = [];
    this.unsubscribe = this.store.on((topics) => this.update(topics));
    this.onHash = () => this.route();
  }

  start() {
    document.body.dataset.role = this.store.user.role;
    this.renderShell();
    window.addEventListener('hashchange', this.onHash);
    this.live.start();
    this.loadHistory();
    this.timers.push(setInterval(() => this.refreshNodes(), REFRESH_NODES_MS));
    this.timers.push(setInterval(() => this.checkPending(), PENDING_CHECK_MS));
    this.route();
  }

  stop() {
    this.live.stop();
    this.unsubscribe();
    this.timers.forEach(clearInterval);
    window.removeEventListener('hashchange', this.onHash);
    this.view?.unmount?.();
    delete document.body.dataset.role;
  }

  async checkAuth() {
    try {
      await api.get('/api/v1/whoami', { quiet401: true });
      return true;
    } catch (err) {
      if (err instanceof api.ApiError && err.status === 401) {
        sessionLost();
        return false;
      }
      throw err;
    }
  }

  async loadHistory() {
    try {
      const [recent, health] = await Promise.all([
        api.get(`/api/v1/events?limit=${HISTORY_EVENTS}`),
        api.get('/api/v1/events?types=node.health.reported&limit=1000'),
      ]);
      this.store.addHistory([...health.items, ...recent.items]);
    } catch (err) {
      this.store.notice(`Event history not loaded: ${err.message}`, 'warn');
    }
  }

  async refreshNodes() {
    // Heartbeats update last_seen without an event; re-read it now and then.
    if (document.hidden || this.store.conn.state !== 'live') return;
    try {
      const { items } = await api.get('/api/v1/nodes');
      for (const node of items) {
        const known = this.store.nodes.get(node.id);
        if (known) known.last_seen = Math.max(known.last_seen || 0, node.last_seen || 0);
      }
      this.store.changed('nodes');
    } catch { /* the indicator already tells when the controller is away */ }
  }

  async resourceChanged(d) {
    if (d.action === 'deleted') {
      this.store.removePin(d.resource);
      return;
    }
    const mine = this.store.pending.get(d.resource);
    if (mine && mine.requestId === d.request_id) return; // our PATCH answer brings it
    try {
      this.store.putPin(await api.get(`/api/v1/gpio/${encodeURIComponent(d.resource)}`));
    } catch (err) {
      if (err.status === 404) this.store.removePin(d.resource);
    }
  }

  async checkPending() {
    const now = Date.now();
    for (const [name, p] of this.store.pending) {
      if (now - p.at < 4000 || (p.checked && now - p.checked < 4000)) continue;
      p.checked = now;
      try {
        const pin = await api.get(`/api/v1/gpio/${encodeURIComponent(name)}`);
        if (pin.status?.phase === 'Error' && (pin.status.observedGeneration || 0) >= (p.generation || 0)) {
          this.store.pending.delete(name);
          this.store.notice(`${name}: ${pin.status.message || 'the agent could not apply it'}`, 'error');
        }
        this.store.putPin(pin, { requestId: p.requestId });
      } catch { /* retried on the next tick */ }
    }
  }

  /** Ask for a GPIO change; it shows pending until the node's agent confirms it. */
  async setPin(name, patch, field, value) {
    const requestId = `ui-${crypto.getRandomValues(new Uint32Array(2)).join('')}`;
    this.store.pending.set(name, { requestId, generation: 0, field, value, at: Date.now() });
    this.store.changed('gpio');
    try {
      const res = await api.patch(`/api/v1/gpio/${encodeURIComponent(name)}`, { spec: patch }, { headers: { 'X-Request-ID': requestId } });
      this.store.putPin(res.data, { requestId });
    } catch (err) {
      this.store.pending.delete(name);
      this.store.changed('gpio');
      this.store.notice(`${name}: ${err.message}`, 'error');
    }
  }

  navigate(hash) {
    if (location.hash === hash) this.route();
    else location.hash = hash;
  }

  route() {
    const hash = location.hash || '#/nodes';
    let match = null;
    let module = null;
    for (const [pattern, view] of ROUTES) {
      match = hash.match(pattern);
      if (match) { module = view; break; }
    }
    if (!module) { location.replace('#/nodes'); return; }
    this.view?.unmount?.();
    const main = document.getElementById('view');
    main.replaceChildren();
    const params = match.slice(1).map((p) => (p === undefined ? undefined : decodeURIComponent(p)));
    this.view = module.mount(main, this, params);
    document.title = `${this.view.title || 'Pi-Controller'} · Pi-Controller`;
    for (const link of document.querySelectorAll('nav.tabs a')) {
      if (hash.startsWith(link.getAttribute('href'))) link.setAttribute('aria-current', 'page');
      else link.removeAttribute('aria-current');
    }
    main.focus({ preventScroll: true });
  }

  renderShell() {
    const user = this.store.user;
    const conn = h('div', { class: 'conn', id: 'conn', role: 'status', 'aria-live': 'polite' });
    replace(root,
      h('header', { class: 'top' },
        h('a', { class: 'brand', href: '#/nodes' }, h('img', { src: '/ui/icon.svg', alt: '', width: 24, height: 24 }), h('span', {}, 'Pi-Controller')),
        h('nav', { class: 'tabs', 'aria-label': 'Sections' }, NAV.map(([href, label]) => h('a', { href }, label)),
          this.store.can('admin') ? h('a', { href: '#/access' }, 'Access') : null,
          this.store.can('admin') ? h('a', { href: '#/audit' }, 'Audit') : null),
        conn,
        h('div', { class: 'user' },
          h('span', { class: 'user-name', title: 'signed in as' }, user.name),
          h('span', { class: `role role-${user.role}`, id: 'role', title: roleHelp(user.role) }, user.role),
          h('button', { class: 'ghost small', type: 'button', onclick: logout }, 'Log out'))),
      h('div', { class: 'stale', id: 'stale', hidden: true, role: 'alert' }),
      h('div', { class: 'notices', id: 'notices' }),
      h('main', { id: 'view', tabindex: '-1' }));
    this.renderConn();
  }

  renderConn() {
    const el = document.getElementById('conn');
    if (!el) return;
    const c = this.store.conn;
    const text = {
      connecting: c.mode === 'resume' ? 'Reconnecting…' : 'Connecting…',
      syncing: 'Loading…',
      live: 'Live',
      down: `Offline · retry in ${Math.max(0, Math.ceil(((c.retryAt || 0) - Date.now()) / 1000))}s`,
    }[c.state] || c.state;
    el.dataset.state = c.state;
    el.dataset.mode = c.mode || '';
    el.title = c.detail || '';
    replace(el, h('span', { class: 'conn-dot', 'aria-hidden': 'true' }), h('span', { class: 'conn-text' }, text));
    const stale = document.getElementById('stale');
    const down = c.state === 'down';
    if (down && !this.downSince) this.downSince = new Date();
    if (c.state === 'live') this.downSince = null;
    stale.hidden = !down;
    document.body.classList.toggle('is-stale', down);
    if (down) {
      stale.textContent = `Connection to the controller lost at ${this.downSince.toLocaleTimeString()}: `
        + 'what you see may be out of date. It reconnects and catches up by itself.';
    }
  }

  renderNotices() {
    const el = document.getElementById('notices');
    if (!el) return;
    const fresh = this.store.notices.filter((n) => Date.now() - n.at < 15000);
    replace(el, fresh.map((n) => h('div', { class: `notice notice-${n.level}` }, n.text,
      h('button', { class: 'ghost small', type: 'button', 'aria-label': 'dismiss', onclick: () => {
        this.store.notices = this.store.notices.filter((x) => x !== n);
        this.renderNotices();
      } }, '×'))));
    if (fresh.length) setTimeout(() => this.renderNotices(), 15500);
  }

  update(topics) {
    if (topics.has('conn')) this.renderConn();
    if (topics.has('notice')) this.renderNotices();
    this.view?.update?.(topics);
  }
}

function roleHelp(role) {
  return {
    viewer: 'viewer: can see everything, change nothing',
    operator: 'operator: can also drive GPIO',
    admin: 'admin: can do everything',
  }[role] || role;
}

async function logout() {
  try { await api.post('/api/v1/logout'); } catch { /* the cookie goes either way */ }
  sessionLost('Logged out.');
}

function sessionLost(message = 'Your session ended; log in again.') {
  if (app) { app.stop(); app = null; }
  showLogin(message);
}

function showLogin(message = '') {
  const token = h('input', { id: 'token', name: 'token', type: 'password', autocomplete: 'current-password', required: true, placeholder: 'pic_…', spellcheck: 'false' });
  const error = h('p', { class: 'login-error', id: 'login-error', role: 'alert' }, message);
  const button = h('button', { type: 'submit', class: 'primary' }, 'Log in');
  const form = h('form', { class: 'login', id: 'login', onsubmit: async (e) => {
    e.preventDefault();
    button.disabled = true;
    error.textContent = '';
    try {
      const { data } = await api.post('/api/v1/login', { token: token.value.trim() }, { quiet401: true });
      token.value = '';
      startApp(data);
    } catch (err) {
      error.textContent = err.status === 401 ? 'That token is unknown or revoked.'
        : err instanceof api.ApiError ? err.message : 'The controller cannot be reached.';
      button.disabled = false;
      token.select();
    }
  } },
  h('div', { class: 'login-brand' }, h('img', { src: '/ui/icon.svg', alt: '', width: 40, height: 40 }), h('h1', {}, 'Pi-Controller')),
  h('label', { for: 'token' }, 'API token'),
  token,
  h('p', { class: 'hint' }, 'The admin token is printed when the controller starts; admins create others with ', h('code', {}, 'POST /api/v1/tokens'), '.'),
  button,
  error);
  replace(root, h('div', { class: 'login-wrap' }, form));
  document.title = 'Log in · Pi-Controller';
  token.focus();
}

function startApp(user) {
  if (app) app.stop();
  app = new App(user);
  window.picApp = app; // for the browser tests and for poking around in devtools
  app.start();
}

api.onUnauthorized(() => sessionLost());

async function boot(attempt = 0) {
  try {
    startApp(await api.get('/api/v1/whoami', { quiet401: true }));
  } catch (err) {
    if (err instanceof api.ApiError && err.status === 401) {
      showLogin();
      return;
    }
    replace(root, h('p', { class: 'boot' }, 'The controller cannot be reached; retrying…'));
    setTimeout(() => boot(attempt + 1), Math.min(8000, 500 * 2 ** attempt));
  }
}

boot();
