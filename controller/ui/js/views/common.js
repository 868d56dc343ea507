// Pieces several views share.

import { h } from '../dom.js';

export const STATUS_CLASSES = ['ready', 'offline', 'provisioning', 'discovered', 'not_ready', 'maintenance', 'failed', 'unknown'];

export function statusBadge(status) {
  const known = STATUS_CLASSES.includes(status) ? status : 'unknown';
  return h('span', { class: `status status-${known}`, dataset: { status: status || 'unknown' } },
    h('span', { class: 'status-dot', 'aria-hidden': 'true' }), status || 'unknown');
}

export function empty(text, ...more) {
  return h('div', { class: 'empty' }, h('p', {}, text), ...more);
}

export function nodeLink(id) {
  return h('a', { href: `#/nodes/${encodeURIComponent(id)}` }, id);
}

export function section(title, ...children) {
  return h('section', { class: 'card' }, h('h2', {}, title), ...children);
}
