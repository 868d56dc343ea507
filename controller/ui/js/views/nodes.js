// The nodes table: live status, model, address, temperature, load, last seen; filter + search.

import { ago, h, num, replace } from '../dom.js';
import { load, temperature } from '../health.js';
import { empty, statusBadge } from './common.js';

const FILTERS = [['all', 'All'], ['ready', 'Ready'], ['offline', 'Offline'], ['other', 'Other']];

function bucket(status) {
  return status === 'ready' || status === 'offline' ? status : 'other';
}

export function mount(root, app) {
  const store = app.store;
  const state = { filter: sessionStorage.getItem('nodes.filter') || 'all', query: '' };
  const search = h('input', { type: 'search', id: 'node-search', placeholder: 'Search name, IP, model…', 'aria-label': 'Search nodes',
    oninput: () => { state.query = search.value.trim().toLowerCase(); render(); } });
  const chips = h('div', { class: 'chips', role: 'group', 'aria-label': 'Filter by status' });
  const body = h('tbody');
  const table = h('table', { class: 'grid nodes-table', id: 'nodes-table' },
    h('thead', {}, h('tr', {}, ['Node', 'Status', 'Model', 'IP', 'CPU temp', 'Load', 'Last seen'].map((t) => h('th', { scope: 'col' }, t)))),
    body);
  const emptyBox = h('div');
  replace(root, h('div', { class: 'page-head' }, h('h1', {}, 'Nodes'), h('div', { class: 'toolbar' }, chips, search)), table, emptyBox);

  function render() {
    const nodes = [...store.nodes.values()].sort((a, b) => a.id.localeCompare(b.id));
    const counts = { all: nodes.length, ready: 0, offline: 0, other: 0 };
    for (const n of nodes) counts[bucket(n.status)] += 1;
    replace(chips, FILTERS.map(([key, label]) => h('button', { type: 'button', class: 'chip', 'aria-pressed': String(state.filter === key), dataset: { filter: key },
      onclick: () => { state.filter = key; sessionStorage.setItem('nodes.filter', key); render(); } }, `${label} `, h('span', { class: 'count' }, counts[key]))));
    const now = Date.now() / 1000;
    const shown = nodes.filter((n) => (state.filter === 'all' || bucket(n.status) === state.filter)
      && (!state.query || [n.id, n.hostname, n.ip_address, n.model, n.status].some((v) => (v || '').toLowerCase().includes(state.query))));
    replace(body, shown.map((n) => {
      const m = store.latestHealth(n.id)?.m;
      const temp = temperature(m);
      const row = h('tr', { dataset: { node: n.id, status: n.status }, tabindex: '0',
        onclick: (e) => { if (!e.target.closest('a')) app.navigate(`#/nodes/${encodeURIComponent(n.id)}`); },
        onkeydown: (e) => { if (e.key === 'Enter') app.navigate(`#/nodes/${encodeURIComponent(n.id)}`); } },
      h('td', { 'data-label': 'Node' }, h('a', { href: `#/nodes/${encodeURIComponent(n.id)}`, class: 'node-name' }, n.id),
        n.hostname && n.hostname !== n.id ? h('div', { class: 'muted' }, n.hostname) : null),
      h('td', { 'data-label': 'Status', class: 'cell-status' }, statusBadge(n.status)),
      h('td', { 'data-label': 'Model' }, n.model || '—'),
      h('td', { 'data-label': 'IP', class: 'mono' }, n.ip_address || '—'),
      h('td', { 'data-label': 'CPU temp', class: temp >= 80 ? 'num hot' : temp >= 70 ? 'num warm' : 'num' }, temp === undefined ? '—' : `${num(temp)} °C`),
      h('td', { 'data-label': 'Load', class: 'num' }, num(load(m), 2)),
      h('td', { 'data-label': 'Last seen', class: 'cell-seen', title: n.last_seen ? new Date(n.last_seen * 1000).toLocaleString() : '' }, ago(n.last_seen, now)));
      return row;
    }));
    table.hidden = shown.length === 0;
    replace(emptyBox, shown.length ? null : nodes.length
      ? empty('No node matches this filter.')
      : empty(store.conn.state === 'live' ? 'No nodes yet. Start pi-agent on a Pi, or enable discovery.' : 'Waiting for the controller…'));
  }

  render();
  const tick = setInterval(render, 5000); // "last seen" ages without any event
  return {
    title: 'Nodes',
    update(topics) { if (topics.has('nodes') || topics.has('conn')) render(); },
    unmount() { clearInterval(tick); },
  };
}
