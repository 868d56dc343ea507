// The live event log: every event, filtered by type and node, pausable.

import { clock, h, replace } from '../dom.js';

const TYPES = ['node.discovered', 'node.status.changed', 'node.health.reported', 'node.removed', 'gpio.state.changed', 'gpio.resource.changed',
  'cluster.node.added', 'cluster.node.removed', 'job.step.changed', 'system.log.created'];
const SHOWN = 300;

const HEALTH_SHOWN = [['cpu_temp_c', 'temp', ' °C'], ['cpu_percent', 'cpu', ' %'], ['load_1', 'load', ''], ['memory_percent', 'mem', ' %'], ['disk_percent', 'disk', ' %']];

function healthSummary(m) {
  const parts = HEALTH_SHOWN.filter(([k]) => typeof m[k] === 'number').map(([k, label, unit]) => `${label} ${Math.round(m[k] * 10) / 10}${unit}`);
  if (m.under_voltage || m.throttled) parts.push('throttled/under-voltage');
  return parts.join(' · ') || 'report';
}

export function summary(e) {
  const d = e.data || {};
  switch (e.type) {
    case 'node.discovered': return `${d.node_id} at ${d.ip_address}${d.source ? ` (${d.source})` : ''}`;
    case 'node.status.changed': return `${d.node_id}: ${d.previous_status || '—'} → ${d.status}${d.reason ? ` (${d.reason})` : ''}`;
    case 'node.removed': return `${d.node_id} forgotten${d.actor ? ` by ${d.actor}` : ''}${d.reason ? ` (${d.reason})` : ''}`;
    case 'node.health.reported': return `${d.node_id}: ${healthSummary(d.metrics || {})}`;
    case 'gpio.state.changed': return `${d.resource} (BCM ${d.pin}) = ${d.state}${d.pwm_duty !== null && d.pwm_duty !== undefined ? ` ${d.pwm_duty} %` : ''}${d.actor ? ` by ${d.actor}` : ''}${d.reason ? ` (${d.reason})` : ''}`;
    case 'gpio.resource.changed': return `${d.resource} on ${d.node_id} ${d.action}${d.actor ? ` by ${d.actor}` : ''}`;
    case 'cluster.node.added': return `${d.node_id} joined ${d.cluster_id}${d.status ? ` (${d.status})` : ''}`;
    case 'cluster.node.removed': return `${d.node_id} left ${d.cluster_id}`;
    case 'job.step.changed': return `job ${d.job_id} on ${d.node_id}: ${d.step} ${d.status}${d.message ? ` — ${d.message}` : ''}`;
    case 'system.log.created': return `[${d.level}] ${d.message}${d.source ? ` (${d.source})` : ''}`;
    default: return JSON.stringify(d).slice(0, 160);
  }
}

export function mount(root, app) {
  const store = app.store;
  const saved = JSON.parse(sessionStorage.getItem('events.filter') || '{}');
  const state = { type: saved.type || '', node: saved.node || '', text: '', paused: false, frozen: null, open: new Set() };
  const typeSelect = h('select', { id: 'event-type', 'aria-label': 'Event type', onchange: () => { state.type = typeSelect.value; persist(); render(); } },
    h('option', { value: '' }, 'All types'),
    ['node.*', 'gpio.*', 'cluster.*', 'job.*', 'system.*'].map((g) => h('option', { value: g }, g)),
    TYPES.map((t) => h('option', { value: t }, t)));
  typeSelect.value = state.type;
  const nodeSelect = h('select', { id: 'event-node', 'aria-label': 'Node', onchange: () => { state.node = nodeSelect.value; persist(); render(); } });
  const search = h('input', { type: 'search', placeholder: 'Search…', 'aria-label': 'Search events', oninput: () => { state.text = search.value.toLowerCase(); render(); } });
  const pause = h('button', { type: 'button', id: 'event-pause', class: 'ghost', 'aria-pressed': 'false', onclick: () => {
    state.paused = !state.paused;
    state.frozen = state.paused ? store.events.length && store.events[store.events.length - 1].id : null;
    render();
  } });
  const info = h('span', { class: 'muted small', id: 'event-info' });
  const list = h('ol', { class: 'event-log', id: 'event-log' });
  replace(root, h('div', { class: 'page-head' }, h('h1', {}, 'Events'), h('div', { class: 'toolbar' }, typeSelect, nodeSelect, search, pause)), info, list);

  function persist() {
    sessionStorage.setItem('events.filter', JSON.stringify({ type: state.type, node: state.node }));
  }

  function matches(e) {
    if (state.type) {
      if (state.type.endsWith('.*') ? !e.type.startsWith(state.type.slice(0, -1)) : e.type !== state.type) return false;
    }
    if (state.node && e.node_id !== state.node) return false;
    if (state.text && !`${e.type} ${e.node_id || ''} ${e.resource || ''} ${e.cluster_id || ''} ${summary(e)}`.toLowerCase().includes(state.text)) return false;
    return true;
  }

  function renderNodes() {
    const ids = new Set([...store.nodes.keys()]);
    if (state.node) ids.add(state.node);
    const options = [h('option', { value: '' }, 'All nodes'), ...[...ids].sort().map((id) => h('option', { value: id }, id))];
    if (nodeSelect.options.length !== options.length) {
      replace(nodeSelect, options);
      nodeSelect.value = state.node;
    }
  }

  function heldCount() {
    const cut = store.events.findIndex((e) => e.id === state.frozen);
    return cut < 0 ? 0 : store.events.slice(cut + 1).filter(matches).length;
  }

  function renderPause() {
    const held = state.paused && state.frozen ? heldCount() : 0;
    pause.textContent = state.paused ? `Resume${held ? ` (${held} new)` : ''}` : 'Pause';
    pause.setAttribute('aria-pressed', String(state.paused));
  }

  function render() {
    renderNodes();
    let events = store.events;
    if (state.paused && state.frozen) {
      const cut = events.findIndex((e) => e.id === state.frozen);
      if (cut >= 0) events = events.slice(0, cut + 1);
    }
    const shown = [];
    for (let i = events.length - 1; i >= 0 && shown.length < SHOWN; i -= 1) if (matches(events[i])) shown.push(events[i]);
    renderPause();
    list.classList.toggle('paused', state.paused);
    info.textContent = `${shown.length < SHOWN ? shown.length : `latest ${SHOWN}`} of ${store.events.length} events kept in this page${state.paused ? ' · paused' : ''}`;
    replace(list, shown.map((e) => {
      const open = state.open.has(e.id);
      return h('li', { class: `ev ev-${e.type.split('.')[0]}${open ? ' open' : ''}`, dataset: { id: e.id, type: e.type, node: e.node_id || '' } },
        h('button', { type: 'button', class: 'ev-row', 'aria-expanded': String(open), onclick: () => { if (open) state.open.delete(e.id); else state.open.add(e.id); render(); } },
          h('time', { datetime: e.timestamp, title: `${e.timestamp} · id ${e.id}` }, clock(e.timestamp)),
          h('span', { class: 'ev-type' }, e.type),
          h('span', { class: 'ev-summary' }, summary(e))),
        open ? h('pre', { class: 'ev-json' }, JSON.stringify(e, null, 2)) : null);
    }));
    if (!shown.length) list.append(h('li', { class: 'empty' }, store.events.length ? 'No event matches these filters.' : 'No events yet.'));
  }

  render();
  return {
    title: 'Events',
    update(topics) {
      if (state.paused && !topics.has('nodes')) renderPause();
      else if (topics.has('events') || topics.has('nodes')) render();
    },
  };
}
