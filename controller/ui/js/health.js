// Reading health metrics whatever their exact names: agents report a flat-ish dict.

const TEMP = ['cpu_temp_c', 'cpu_temperature', 'cpu_temp', 'temperature_c', 'temp_c', 'temperature', 'soc_temp'];
const LOAD = ['load1', 'load_1', 'load_1m', 'loadavg_1', 'load'];

export function pick(metrics, names) {
  if (!metrics) return undefined;
  for (const name of names) {
    let value = metrics[name];
    if (Array.isArray(value)) value = value[0];
    if (value && typeof value === 'object') value = value.value ?? value['1m'] ?? value.load1;
    if (typeof value === 'number' && Number.isFinite(value)) return value;
  }
  for (const group of ['cpu', 'thermal', 'system']) {
    if (metrics[group] && typeof metrics[group] === 'object') {
      const found = pick(metrics[group], names);
      if (found !== undefined) return found;
    }
  }
  return undefined;
}

export const temperature = (m) => pick(m, TEMP);
export const load = (m) => pick(m, LOAD);

/** Every numeric series in a history of {t, m}, flattened one level (cpu.temp -> "cpu temp"). */
export function series(history) {
  const out = new Map();
  for (const { t, m } of history) {
    for (const [key, value] of flatten(m)) {
      if (!out.has(key)) out.set(key, []);
      out.get(key).push({ t, v: value });
    }
  }
  return out;
}

function* flatten(metrics, prefix = '') {
  for (const [key, value] of Object.entries(metrics || {})) {
    const name = prefix ? `${prefix}.${key}` : key;
    if (typeof value === 'number' && Number.isFinite(value)) yield [name, value];
    else if (typeof value === 'boolean') yield [name, value ? 1 : 0];
    else if (Array.isArray(value) && typeof value[0] === 'number') yield [name, value[0]];
    else if (value && typeof value === 'object' && !prefix) yield* flatten(value, name);
  }
}

const UNITS = [[/temp/, ' °C', 1], [/percent|_pct|usage|util/, ' %', 1], [/load/, '', 2], [/_mb$/, ' MB', 0], [/_bytes$/, ' B', 0], [/volt/, ' V', 2], [/mhz|freq/, ' MHz', 0]];

export function unitOf(name) {
  for (const [re, unit, digits] of UNITS) if (re.test(name)) return { unit, digits };
  return { unit: '', digits: 1 };
}

export function nice(name) {
  return name.replace(/[._]/g, ' ').replace(/\bc\b$/, '').replace(/\bpct\b|\bpercent\b/, '%').trim();
}
