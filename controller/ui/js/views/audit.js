// The audit trail (admins only): who changed what, when, and how it went.

import * as api from '../api.js';
import { h, replace } from '../dom.js';
import { empty } from './common.js';

const PAGE = 50;

export function mount(root, app) {
  const store = app.store;
  replace(root, h('div', { class: 'page-head' }, h('h1', {}, 'Audit')));
  if (!store.can('admin')) {
    root.append(empty('Only admins read the audit trail.'));
    return { title: 'Audit' };
  }
  const actor = h('input', { type: 'search', id: 'audit-actor', placeholder: 'who (token name)', 'aria-label': 'Filter by who', autocomplete: 'off' });
  const action = h('input', { type: 'search', id: 'audit-action', placeholder: 'what, e.g. gpio', 'aria-label': 'Filter by action', autocomplete: 'off' });
  const status = h('select', { id: 'audit-status', 'aria-label': 'Filter by result' },
    [['', 'any result'], ['2xx', 'succeeded'], ['4xx', 'refused'], ['5xx', 'failed']].map(([v, t]) => h('option', { value: v }, t)));
  const rows = h('tbody', { id: 'audit-rows' });
  const more = h('button', { type: 'button', class: 'small', id: 'audit-more', hidden: true }, 'Older');
  const error = h('p', { class: 'bad small', role: 'alert' });
  let next = null;

  const form = h('form', { class: 'toolbar wide', role: 'search', onsubmit: (e) => { e.preventDefault(); load(true); } },
    actor, action, status, h('button', { type: 'submit', class: 'primary' }, 'Filter'));
  root.append(h('section', { class: 'card' }, form, error,
    h('table', { class: 'grid compact', id: 'audit' },
      h('thead', {}, h('tr', {}, ['When', 'Who', 'What', 'Target', 'Result'].map((t) => h('th', { scope: 'col' }, t)))),
      rows), more));
  more.onclick = () => load(false);

  async function load(fresh) {
    error.textContent = '';
    const params = new URLSearchParams({ limit: String(PAGE) });
    if (actor.value.trim()) params.set('actor', actor.value.trim());
    if (action.value.trim()) params.set('action', action.value.trim());
    if (status.value) params.set('status', status.value);
    if (!fresh && next) params.set('before', next);
    try {
      const data = await api.get(`/api/v1/audit?${params}`);
      if (fresh) rows.replaceChildren();
      for (const e of data.items) {
        rows.append(h('tr', { dataset: { audit: e.id } },
          h('td', { 'data-label': 'When' }, new Date(e.time).toLocaleString()),
          h('td', { 'data-label': 'Who' }, e.actor, e.role ? h('span', { class: `role role-${e.role}` }, e.role) : null),
          h('td', { 'data-label': 'What' }, h('code', {}, e.action)),
          h('td', { 'data-label': 'Target' }, Object.entries(e.target).map(([k, v]) => `${k}=${v}`).join(' ') || '—'),
          h('td', { 'data-label': 'Result', class: e.status >= 400 ? 'bad' : '' }, String(e.status))));
      }
      next = data.next;
      more.hidden = data.items.length < PAGE || !next;
      if (!rows.children.length) rows.append(h('tr', {}, h('td', { colspan: 5 }, 'Nothing recorded that matches.')));
    } catch (err) {
      error.textContent = `Audit trail not loaded: ${err.message}`;
    }
  }

  load(true);
  return { title: 'Audit' };
}
