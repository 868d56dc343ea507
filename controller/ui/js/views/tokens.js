// API tokens (admins only): who may log in or call the API, with which role.

import * as api from '../api.js';
import { h, replace } from '../dom.js';
import { empty } from './common.js';

export function mount(root, app) {
  const store = app.store;
  const list = h('div', { id: 'tokens' });
  const shown = h('div', { id: 'new-token' });
  replace(root, h('div', { class: 'page-head' }, h('h1', {}, 'Access')), shown);
  if (!store.can('admin')) {
    root.append(empty('Only admins manage API tokens.'));
    return { title: 'Access' };
  }
  const name = h('input', { type: 'search', id: 'token-name', placeholder: 'name, e.g. kitchen-tablet', 'aria-label': 'Token name', autocomplete: 'off' });
  const role = h('select', { id: 'token-role', 'aria-label': 'Role' }, ['viewer', 'operator', 'admin'].map((r) => h('option', { value: r }, r)));
  const error = h('p', { class: 'bad small', role: 'alert' });
  const form = h('form', { class: 'card form-grid', id: 'token-create', onsubmit: async (e) => {
    e.preventDefault();
    error.textContent = '';
    try {
      const { data } = await api.post('/api/v1/tokens', { name: name.value.trim(), role: role.value });
      name.value = '';
      const value = h('code', { class: 'token-value', id: 'token-value' }, data.token);
      replace(shown, h('div', { class: 'card notice-warn' },
        h('p', {}, `Token for ${data.name} (${data.role}). It is shown only now: copy it.`), value, ' ',
        navigator.clipboard ? h('button', { type: 'button', class: 'small', onclick: () => navigator.clipboard.writeText(data.token) }, 'Copy') : null,
        h('button', { type: 'button', class: 'small ghost', onclick: () => replace(shown) }, 'Done')));
      load();
    } catch (err) {
      error.textContent = err.message;
    }
  } }, h('h2', {}, 'New token'), h('div', { class: 'toolbar wide' }, name, role, h('button', { type: 'submit', class: 'primary' }, 'Create')), error);
  root.append(form, h('section', { class: 'card' }, h('h2', {}, 'Tokens'), list));

  async function load() {
    try {
      const { items } = await api.get('/api/v1/tokens');
      replace(list, items.length ? h('table', { class: 'grid compact' },
        h('thead', {}, h('tr', {}, ['Name', 'Role', 'Created', ''].map((t) => h('th', {}, t)))),
        h('tbody', {}, items.map((t) => h('tr', { dataset: { token: t.name } },
          h('td', { 'data-label': 'Name' }, t.name),
          h('td', { 'data-label': 'Role' }, h('span', { class: `role role-${t.role}` }, t.role)),
          h('td', { 'data-label': 'Created' }, t.created ? new Date(t.created * 1000).toLocaleString() : '—'),
          h('td', {}, t.name === store.user.name ? h('span', { class: 'muted small' }, 'you') : h('button', { type: 'button', class: 'small ghost bad', 'aria-label': `revoke ${t.name}`, onclick: async () => {
            if (!confirm(`Revoke ${t.name}? Whoever uses it loses access.`)) return;
            try { await api.del(`/api/v1/tokens/${encodeURIComponent(t.name)}`); load(); } catch (err) { store.notice(err.message, 'error'); }
          } }, 'Revoke'))))))
        : empty('No tokens.'));
    } catch (err) {
      replace(list, empty(`Tokens not loaded: ${err.message}`));
    }
  }

  load();
  return { title: 'Access' };
}
