// GPIO per node: the 40-pin header with each named resource on its pin, and a card per
// resource: a switch for outputs, a slider for PWM duty, a live level for inputs. A change
// shows "pending" until the node's agent confirms it.

import { ago, h, replace } from '../dom.js';
import { BCM_TO_PHYSICAL, header } from '../svg.js';
import { empty, statusBadge } from './common.js';

export function mount(root, app, [param]) {
  const store = app.store;
  const [nodeParam, selectedParam] = (param || '').split('?');
  let nodeId = nodeParam || '';
  let selected = selectedParam || '';
  const picker = h('div', { class: 'node-picker' });
  const title = h('div', { class: 'page-head' });
  const picture = h('div', { class: 'header-box', id: 'header-box' });
  const list = h('div', { class: 'pin-cards', id: 'pin-cards' });
  const cards = new Map();
  replace(root, title, picker, h('div', { class: 'gpio-layout' },
    h('section', { class: 'card header-card' }, h('h2', {}, '40-pin header'), picture, legend()),
    h('section', { class: 'card' }, h('h2', {}, 'Resources'), list)));

  function chooseNode() {
    if (nodeId && store.nodes.has(nodeId)) return;
    if (nodeId && !store.nodes.size) return; // wait for the snapshot
    const withPins = [...store.pins.values()].map((p) => p.spec.nodeName).sort();
    const first = withPins[0] || [...store.nodes.keys()].sort()[0];
    if (first && first !== nodeId && !nodeParam) {
      nodeId = first;
      history.replaceState(null, '', `#/gpio/${encodeURIComponent(first)}`);
    }
  }

  function renderPicker() {
    const ids = [...store.nodes.keys()].sort();
    const counts = {};
    for (const p of store.pins.values()) counts[p.spec.nodeName] = (counts[p.spec.nodeName] || 0) + 1;
    const select = h('select', { 'aria-label': 'Node', id: 'gpio-node', onchange: () => app.navigate(`#/gpio/${encodeURIComponent(select.value)}`) },
      ids.map((id) => h('option', { value: id, selected: id === nodeId || null }, `${id} (${counts[id] || 0} pins)`)));
    replace(picker, ids.length ? [h('label', { for: 'gpio-node' }, 'Node '), select] : null);
    const node = store.nodes.get(nodeId);
    replace(title, h('h1', {}, 'GPIO'), node ? statusBadge(node.status) : null,
      node && node.status !== 'ready' ? h('span', { class: 'muted small' }, 'changes wait until the node is back') : null);
  }

  function renderHeader() {
    const used = {};
    for (const p of store.nodePins(nodeId)) {
      const name = p.metadata.name;
      used[p.spec.pin] = { name, mode: p.spec.mode, state: shownState(p), duty: p.status?.pwmDuty ?? p.spec.pwmDuty, pending: store.isPending(name) };
    }
    replace(picture, nodeId ? header(used, { selected, onSelect: select }) : empty('No node selected.'));
  }

  function select(name) {
    selected = name;
    renderHeader();
    for (const [n, card] of cards) card.el.classList.toggle('selected', n === name);
    cards.get(name)?.el.scrollIntoView({ block: 'nearest', behavior: 'smooth' });
  }

  function shownState(pin) {
    const p = store.pending.get(pin.metadata.name);
    if (p && p.field === 'state') return p.value;
    return pin.status?.state ?? pin.spec.state;
  }

  function renderCards() {
    const pins = store.nodePins(nodeId);
    const names = pins.map((p) => p.metadata.name);
    for (const [name, card] of cards) {
      if (!names.includes(name)) { card.el.remove(); cards.delete(name); }
    }
    pins.forEach((pin, index) => {
      let card = cards.get(pin.metadata.name);
      if (!card) {
        card = makeCard(pin.metadata.name);
        cards.set(pin.metadata.name, card);
      }
      if (list.children[index] !== card.el) list.insertBefore(card.el, list.children[index] || null);
      card.update(pin);
    });
    if (!pins.length) replace(list, empty(nodeId ? 'No GPIO resources on this node. Create one with POST /api/v1/gpio.' : 'No nodes yet.'));
    else if (list.querySelector('.empty')) list.querySelector('.empty').remove();
  }

  function makeCard(name) {
    const el = h('article', { class: 'pin-card', dataset: { resource: name } });
    const heading = h('div', { class: 'pin-head' });
    const control = h('div', { class: 'pin-control' });
    const meta = h('div', { class: 'pin-meta muted small' });
    const message = h('div', { class: 'pin-message small' });
    el.append(heading, control, meta, message);
    el.addEventListener('click', (e) => { if (!e.target.closest('button, input')) select(name); });
    let mode = null;
    let slider = null;
    let sliderValue = null;
    let toggle = null;
    let lamp = null;

    let built = null;

    function build(pin) {
      mode = pin.spec.mode;
      built = `${mode}/${store.can('operator')}`;
      control.replaceChildren();
      toggle = slider = lamp = null;
      if (!store.can('operator')) {
        // Read-only roles see the level (and duty) but get no control to press.
        lamp = h('span', { class: 'lamp' });
        if (mode === 'pwm') sliderValue = h('output', { class: 'duty' });
        if (mode === 'pwm') control.append(lamp, sliderValue);
        else control.append(lamp);
      } else if (mode === 'output') {
        toggle = h('button', { type: 'button', role: 'switch', class: 'switch', 'aria-label': `${name} output level`,
          onclick: () => {
            const current = shownState(store.pins.get(name));
            const next = current === 'high' ? 'low' : 'high';
            app.setPin(name, { state: next }, 'state', next);
          } }, h('span', { class: 'switch-knob', 'aria-hidden': 'true' }), h('span', { class: 'switch-text' }));
        control.append(toggle);
      } else if (mode === 'pwm') {
        sliderValue = h('output', { class: 'duty' });
        slider = h('input', { type: 'range', min: 0, max: 100, step: 1, 'aria-label': `${name} PWM duty (%)`,
          oninput: () => { sliderValue.textContent = `${slider.value} %`; },
          onchange: () => app.setPin(name, { pwmDuty: Number(slider.value) }, 'pwmDuty', Number(slider.value)) });
        control.append(slider, sliderValue);
      } else {
        lamp = h('span', { class: 'lamp' });
        control.append(lamp);
      }
    }

    function update(pin) {
      if (`${pin.spec.mode}/${store.can('operator')}` !== built) build(pin);
      const pending = store.isPending(name);
      const p = store.pending.get(name);
      const state = shownState(pin);
      const canDrive = store.can('operator');
      el.dataset.state = pin.status?.state || '';
      el.dataset.pending = String(pending);
      el.dataset.mode = pin.spec.mode;
      el.classList.toggle('pending', pending);
      el.classList.toggle('error', pin.status?.phase === 'Error');
      el.classList.toggle('selected', selected === name);
      replace(heading, h('h3', {}, name), h('span', { class: `mode mode-${pin.spec.mode}` }, pin.spec.mode),
        pending ? h('span', { class: 'pending-tag', title: 'waiting for the agent to confirm' }, 'pending') : null);
      if (toggle) {
        toggle.setAttribute('aria-checked', String(state === 'high'));
        toggle.disabled = !canDrive;
        toggle.querySelector('.switch-text').textContent = state === 'high' ? 'High' : 'Low';
      }
      if (slider) {
        const duty = p && p.field === 'pwmDuty' ? p.value : pin.status?.pwmDuty ?? pin.spec.pwmDuty ?? 0;
        // Leave the slider alone while someone is dragging it.
        if (document.activeElement !== slider) slider.value = String(Math.round(duty));
        sliderValue.textContent = `${Math.round(document.activeElement === slider ? Number(slider.value) : duty)} %`;
        slider.disabled = !canDrive;
      }
      if (lamp && !slider && mode === 'pwm') {
        sliderValue.textContent = `${Math.round(pin.status?.pwmDuty ?? pin.spec.pwmDuty ?? 0)} %`;
      }
      if (lamp) {
        lamp.className = `lamp lamp-${state || 'unknown'}`;
        lamp.textContent = state || 'unknown';
      }
      const physical = BCM_TO_PHYSICAL[pin.spec.pin];
      const bits = [`BCM ${pin.spec.pin}`, physical ? `pin ${physical}` : null,
        pin.spec.pull && pin.spec.pull !== 'none' ? `pull-${pin.spec.pull}` : null,
        pin.spec.pwmFrequency ? `${pin.spec.pwmFrequency} Hz` : null,
        pin.spec.activeLow ? 'active-low' : null,
        pin.status?.observedAt ? `changed ${ago(Date.parse(pin.status.observedAt) / 1000)}` : null,
        pin.status?.lastChangedBy ? `by ${pin.status.lastChangedBy}` : null];
      meta.textContent = bits.filter(Boolean).join(' · ');
      message.textContent = pin.status?.phase === 'Error' || pending ? pin.status?.message || '' : '';
      message.classList.toggle('bad', pin.status?.phase === 'Error');
    }

    return { el, update };
  }

  function render() {
    chooseNode();
    renderPicker();
    renderHeader();
    renderCards();
  }

  render();
  const tick = setInterval(() => { for (const card of cards.values()) { const pin = store.pins.get(card.el.dataset.resource); if (pin) card.update(pin); } }, 10000);
  return {
    title: 'GPIO',
    update(topics) { if (topics.has('gpio') || topics.has('nodes')) render(); },
    unmount() { clearInterval(tick); },
  };
}

function legend() {
  const item = (cls, text) => h('span', { class: 'legend-item' }, h('span', { class: `legend-swatch ${cls}` }), text);
  return h('div', { class: 'legend small' }, item('sw-high', 'high'), item('sw-low', 'low'), item('sw-free', 'free GPIO'),
    item('sw-power', 'power'), item('sw-gnd', 'ground'), item('sw-pending', 'pending'));
}
