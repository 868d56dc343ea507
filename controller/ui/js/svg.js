// Inline SVG pictures: small line charts for health history and the 40-pin header.

import { h, s } from './dom.js';

/** A small line chart of [{t, v}] with its latest value; nothing to draw gives a note. */
export function sparkline(points, { label, unit = '', digits = 1, width = 240, height = 56 } = {}) {
  const values = points.filter((p) => typeof p.v === 'number' && Number.isFinite(p.v));
  const latest = values.length ? values[values.length - 1].v : null;
  const head = h('div', { class: 'chart-head' },
    h('span', { class: 'chart-label' }, label),
    h('span', { class: 'chart-value' }, latest === null ? '—' : `${latest.toFixed(digits)}${unit}`));
  if (values.length < 2) {
    return h('figure', { class: 'chart', dataset: { metric: label } }, head,
      h('div', { class: 'chart-empty' }, values.length ? 'one sample so far' : 'no samples yet'));
  }
  const t0 = values[0].t;
  const t1 = values[values.length - 1].t;
  let lo = Math.min(...values.map((p) => p.v));
  let hi = Math.max(...values.map((p) => p.v));
  if (hi - lo < 1e-9) { lo -= 1; hi += 1; }
  const pad = 3;
  const x = (t) => pad + ((t - t0) / Math.max(1, t1 - t0)) * (width - 2 * pad);
  const y = (v) => height - pad - ((v - lo) / (hi - lo)) * (height - 2 * pad);
  const line = values.map((p, i) => `${i ? 'L' : 'M'}${x(p.t).toFixed(1)},${y(p.v).toFixed(1)}`).join('');
  const area = `${line}L${x(t1).toFixed(1)},${height - pad}L${x(t0).toFixed(1)},${height - pad}Z`;
  const svg = s('svg', { viewBox: `0 0 ${width} ${height}`, class: 'spark', role: 'img', preserveAspectRatio: 'none',
    'aria-label': `${label}: ${values.length} samples, latest ${latest.toFixed(digits)}${unit}` },
  s('path', { d: area, class: 'spark-area' }),
  s('path', { d: line, class: 'spark-line' }));
  const range = h('div', { class: 'chart-range' }, `${lo.toFixed(digits)}–${hi.toFixed(digits)}${unit} · `,
    `${values.length} samples over ${span(t1 - t0)}`);
  return h('figure', { class: 'chart', dataset: { metric: label } }, head, svg, range);
}

function span(ms) {
  const s = Math.round(ms / 1000);
  if (s < 120) return `${s} s`;
  if (s < 7200) return `${Math.round(s / 60)} min`;
  return `${Math.round(s / 3600)} h`;
}

// The Raspberry Pi 40-pin header (physical numbering); every other pin is a GPIO whose BCM
// number comes from the same table as common/gpio.py.
export const PHYSICAL_TO_BCM = {
  3: 2, 5: 3, 7: 4, 8: 14, 10: 15, 11: 17, 12: 18, 13: 27, 15: 22, 16: 23, 18: 24, 19: 10,
  21: 9, 22: 25, 23: 11, 24: 8, 26: 7, 27: 0, 28: 1, 29: 5, 31: 6, 32: 12, 33: 13, 35: 19,
  36: 16, 37: 26, 38: 20, 40: 21,
};
export const BCM_TO_PHYSICAL = Object.fromEntries(Object.entries(PHYSICAL_TO_BCM).map(([p, b]) => [b, Number(p)]));
const POWER = { 1: '3V3', 17: '3V3', 2: '5V', 4: '5V' };
const GROUND = new Set([6, 9, 14, 20, 25, 30, 34, 39]);

export function pinKind(physical) {
  if (POWER[physical]) return POWER[physical] === '5V' ? 'p5v' : 'p3v3';
  if (GROUND.has(physical)) return 'gnd';
  return 'gpio';
}

/**
 * The header as an SVG: odd pins on the left column, even on the right, each named resource
 * written beside its pin and coloured by its level. `pins` maps BCM -> {name, mode, state, pending}.
 */
export function header(pins, { onSelect, selected } = {}) {
  const rowH = 22;
  const colX = [170, 194];
  const top = 30;
  const width = 364;
  const height = top + 20 * rowH + 8;
  const svg = s('svg', { viewBox: `0 0 ${width} ${height}`, class: 'header-svg', role: 'img',
    'aria-label': '40-pin GPIO header' });
  svg.append(s('rect', { x: colX[0] - 12, y: top - 16, width: colX[1] - colX[0] + 24, height: 20 * rowH + 10, rx: 6, class: 'hdr-board' }));
  svg.append(s('text', { x: (colX[0] + colX[1]) / 2, y: top - 20, class: 'hdr-title', 'text-anchor': 'middle' }, 'pin 1 ▾'));
  for (let physical = 1; physical <= 40; physical += 1) {
    const row = Math.floor((physical - 1) / 2);
    const left = physical % 2 === 1;
    const cx = left ? colX[0] : colX[1];
    const cy = top + row * rowH;
    const kind = pinKind(physical);
    const bcm = PHYSICAL_TO_BCM[physical];
    const res = bcm !== undefined ? pins[bcm] : undefined;
    let cls = `hdr-pin hdr-${kind}`;
    if (res) cls += ` hdr-used hdr-${res.mode} ${res.state === 'high' ? 'hdr-high' : 'hdr-low'}${res.pending ? ' hdr-pending' : ''}`;
    if (res && selected === res.name) cls += ' hdr-selected';
    const g = s('g', { class: cls, dataset: { physical, bcm: bcm ?? '', resource: res?.name ?? '' } });
    const shape = physical === 1 ? s('rect', { x: cx - 7, y: cy - 7, width: 14, height: 14, rx: 2 }) : s('circle', { cx, cy, r: 7 });
    g.append(shape);
    g.append(s('title', {}, res ? `${res.name}: BCM ${bcm}, pin ${physical}, ${res.mode}, ${res.state || '?'}`
      : bcm !== undefined ? `BCM ${bcm} (pin ${physical})` : `${POWER[physical] || 'GND'} (pin ${physical})`));
    const textX = left ? cx - 19 : cx + 19;
    const anchor = left ? 'end' : 'start';
    const label = res ? res.name : bcm !== undefined ? `GPIO${bcm}` : POWER[physical] || 'GND';
    g.append(s('text', { x: textX, y: cy + 4, 'text-anchor': anchor, class: res ? 'hdr-label hdr-label-used' : 'hdr-label' }, label));
    if (res) {
      const badge = res.mode === 'pwm' && typeof res.duty === 'number' ? `${Math.round(res.duty)}%` : (res.state || '?');
      const bx = left ? textX - label.length * 7.2 - 6 : textX + label.length * 7.2 + 6;
      g.append(s('text', { x: bx, y: cy + 4, 'text-anchor': anchor, class: 'hdr-badge' }, badge));
      if (onSelect) {
        g.setAttribute('tabindex', '0');
        g.setAttribute('role', 'button');
        g.addEventListener('click', () => onSelect(res.name));
        g.addEventListener('keydown', (e) => { if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); onSelect(res.name); } });
      }
    }
    svg.append(g);
  }
  return svg;
}
