import { h, replace } from '../dom.js';
import { empty } from './common.js';

export function mount(root) {
  replace(root, h('div', { class: 'page-head' }, h('h1', {}, 'Clusters')), h('div', { id: 'clusters' }, empty('Loading…')));
  return { title: 'Clusters' };
}
