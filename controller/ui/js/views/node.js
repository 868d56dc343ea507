// One node: its facts, health history as small charts, its pins and its recent events.

import * as api from '../api.js';
import { ago, clock, h, replace } from '../dom.js';
import { nice, series, unitOf } from '../health.js';
import { sparkline } from '../svg.js';
import { empty, section, statusBadge } from './common.js';
import { summary } from './events.js';

const PREFERRED = ['cpu_temp_c', 'cpu_percent', 'load_1', 'memory_percent', 'disk_percent'];
const SKIP = /(^|\.)time$|_bytes$|^uptime|^load_(5|15)$|^addresses/;
const LABELS = { cpu_temp_c: 'CPU temperature', cpu_percent: 'CPU', load_1: 'Load (1 min)', memory_percent: 'Memory', disk_percent: 'Disk' };
const MAX_CHARTS = 6;

/** Metrics from REST, whatever the exact shape: a list of samples with a time and metrics. */
export function samplesFrom(body) {
  const list = Array.isArray(body) ? body : body?.items || body?.samples || body?.metrics || [];
  const out = [];
  for (const item of list) {
    if (!item || typeof item !== 'object') continue;
    let t = item.t ?? item.ts ?? item.time ?? item.timestamp ?? item.at;
    if (typeof t === 'string') t = Date.parse(t);
    else if (typeof t === 'number' && t < 1e12) t *= 1000; // seconds
    const m = item.metrics || item.m || item.values || Object.fromEntries(Object.entries(item).filter(([k]) => !['t', 'ts', 'time', 'timestamp', 'at', 'id'].includes(k)));
    if (Number.isFinite(t)) out.push({ t, m });
  }
  return out;
}

export function mount(root, app, [nodeId]) {
  const store = app.store;
  let restHistory = [];
  let historyNote = 'loading history…';
  const head = h('div', { class: 'page-head' });
  const facts = h('dl', { class: 'facts' });
  const charts = h('div', { class: 'charts', id: 'charts' });
  const note = h('p', { class: 'muted small' });
  const pins = h('div', { id: 'node-pins' });
  const recent = h('ol', { class: 'mini-log' });
  replace(root, h('p', { class: 'crumbs' }, h('a', { href: '#/nodes' }, '← Nodes')), head,
    h('div', { class: 'columns' },
      section('Facts', facts),
      Object.assign(section('Health', charts, note), { className: 'card health-card' })),
    h('div', { class: 'columns' },
      section('Pins', pins),
      section('Recent events', recent)));

  api.optional(`/api/v1/nodes/${encodeURIComponent(nodeId)}/metrics`).then((body) => {
    restHistory = body ? samplesFrom(body) : [];
    historyNote = body ? '' : 'The controller keeps no health history; charts grow as reports arrive.';
    renderHealth();
  }).catch((err) => { historyNote = `History not loaded: ${err.message}`; renderHealth(); });

  function renderHead() {
    const node = store.nodes.get(nodeId);
    replace(head, h('h1', {}, nodeId), node ? statusBadge(node.status) : null,
      node ? h('a', { class: 'button ghost small', href: `#/gpio/${encodeURIComponent(nodeId)}` }, 'GPIO header →') : null,
      node ? actions(node) : null);
    if (!node) {
      replace(facts, empty(store.conn.state === 'live' ? 'This node is not known to the controller.' : 'Loading…'));
      return;
    }
    const rows = [['Hostname', node.hostname], ['IP address', node.ip_address], ['Model', node.model], ['OS', node.os],
      ['Kernel', node.kernel], ['Architecture', node.arch], ['Agent', node.agent_version], ['GPIO backend', node.gpio_backend],
      ['Last seen', node.last_seen ? `${ago(node.last_seen)} (${new Date(node.last_seen * 1000).toLocaleString()})` : '—'],
      ['Status reason', node.status_reason], ['Source', node.source],
      ['Labels', Object.entries(node.labels || {}).map(([k, v]) => `${k}=${v}`).join(', ')]];
    replace(facts, rows.filter(([, v]) => v).map(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]));
  }

  function actions(node) {
    const out = h('div', { class: 'toolbar' });
    if (store.can('operator')) {
      out.append(h('button', { type: 'button', class: 'small', id: 'maintenance', onclick: async (e) => {
        e.target.disabled = true;
        try {
          await api.request('PUT', `/api/v1/nodes/${encodeURIComponent(nodeId)}`, { maintenance: !node.maintenance });
          const fresh = await api.get(`/api/v1/nodes/${encodeURIComponent(nodeId)}`);
          store.nodes.set(nodeId, { ...store.nodes.get(nodeId), ...fresh });
          store.changed('nodes');
        } catch (err) { store.notice(err.message, 'error'); e.target.disabled = false; }
      } }, node.maintenance ? 'End maintenance' : 'Maintenance'));
    }
    if (store.can('admin')) {
      out.append(h('button', { type: 'button', class: 'small ghost bad', onclick: async () => {
        if (!confirm(`Forget ${nodeId}? It comes back if its agent or discovery sees it again.`)) return;
        try {
          await api.del(`/api/v1/nodes/${encodeURIComponent(nodeId)}`);
          app.navigate('#/nodes');
        } catch (err) { store.notice(err.message, 'error'); }
      } }, 'Forget'));
    }
    return out;
  }

  function renderHealth() {
    const live = store.health.get(nodeId) || [];
    const merged = [...restHistory, ...live].sort((a, b) => a.t - b.t)
      .filter((p, i, all) => i === 0 || p.t !== all[i - 1].t);
    const all = series(merged);
    const names = [...all.keys()].filter((n) => !SKIP.test(n))
      .sort((a, b) => rank(a) - rank(b) || a.localeCompare(b)).slice(0, MAX_CHARTS);
    replace(charts, names.length ? names.map((name) => sparkline(all.get(name), { label: LABELS[name] || nice(name), ...unitOf(name) }))
      : empty('No health reports yet.'));
    note.textContent = historyNote;
  }

  function renderPins() {
    const list = store.nodePins(nodeId);
    replace(pins, list.length ? h('table', { class: 'grid compact' },
      h('thead', {}, h('tr', {}, ['Resource', 'BCM', 'Mode', 'State'].map((t) => h('th', {}, t)))),
      h('tbody', {}, list.map((p) => h('tr', { dataset: { resource: p.metadata.name } },
        h('td', { 'data-label': 'Resource' }, h('a', { href: `#/gpio/${encodeURIComponent(nodeId)}?${encodeURIComponent(p.metadata.name)}` }, p.metadata.name)),
        h('td', { 'data-label': 'BCM', class: 'num' }, p.spec.pin),
        h('td', { 'data-label': 'Mode' }, p.spec.mode),
        h('td', { 'data-label': 'State' }, h('span', { class: `level level-${p.status?.state || 'unknown'}` },
          p.spec.mode === 'pwm' ? `${Math.round(p.status?.pwmDuty ?? p.spec.pwmDuty ?? 0)} %` : p.status?.state || '?'),
          store.isPending(p.metadata.name) ? h('span', { class: 'pending-tag' }, 'pending') : null)))))
      : empty('No GPIO resources on this node.'));
  }

  function renderRecent() {
    const list = store.events.filter((e) => e.node_id === nodeId && e.type !== 'node.health.reported').slice(-15).reverse();
    replace(recent, list.length ? list.map((e) => h('li', {}, h('time', {}, clock(e.timestamp)), ' ', h('b', {}, e.type), ' ', summary(e)))
      : h('li', { class: 'muted' }, 'No events for this node yet.'));
  }

  renderHead(); renderHealth(); renderPins(); renderRecent();
  const tick = setInterval(renderHead, 5000);
  return {
    title: nodeId,
    update(topics) {
      if (topics.has('nodes') || topics.has('conn')) { renderHead(); renderHealth(); }
      if (topics.has('gpio')) renderPins();
      if (topics.has('events')) renderRecent();
    },
    unmount() { clearInterval(tick); },
  };
}

function rank(name) {
  const i = PREFERRED.indexOf(name);
  return i < 0 ? PREFERRED.length : i;
}
