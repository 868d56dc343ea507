// Client-side state: nodes, GPIO resources, clusters, jobs and the event log, kept current
// by the /ws feed (snapshot, then events). Views subscribe and re-render once per frame.

const MAX_EVENTS = 2000;
const MAX_HISTORY = 720;

export function idKey(id) {
  const [ms, seq] = String(id).split('-');
  return [Number(ms) || 0, Number(seq) || 0];
}

export function cmpId(a, b) {
  const [am, as] = idKey(a);
  const [bm, bs] = idKey(b);
  return am - bm || as - bs;
}

function eventTime(event) {
  const t = Date.parse(event.timestamp);
  return Number.isNaN(t) ? Date.now() : t;
}

export class Store {
  constructor() {
    this.user = null;
    this.nodes = new Map();
    this.pins = new Map();
    this.clusters = new Map();
    this.jobs = new Map();
    this.events = [];
    this.eventIds = new Set();
    this.pending = new Map(); // resource -> {requestId, generation, field, value, at}
    this.confirmed = new Set(); // request ids an agent confirmed before their PATCH answered
    this.health = new Map(); // node id -> [{t, m}]
    this.lastId = null;
    this.conn = { state: 'connecting', mode: 'snapshot', detail: '' };
    this.notices = [];
    this.listeners = new Set();
    this.onResourceChanged = null; // (data) => re-read that resource over REST
    this.dirty = new Set();
    this.frame = 0;
  }

  on(listener) {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  changed(topic) {
    this.dirty.add(topic);
    if (this.frame) return;
    const flush = () => {
      this.frame = 0;
      const topics = this.dirty;
      this.dirty = new Set();
      for (const listener of [...this.listeners]) listener(topics);
    };
    // A hidden tab gets no animation frames; fall back to a timer so state stays current.
    this.frame = document.hidden ? setTimeout(flush, 250) : requestAnimationFrame(flush);
  }

  setConn(patch) {
    this.conn = { ...this.conn, ...patch };
    this.changed('conn');
  }

  notice(text, level = 'info') {
    this.notices = [...this.notices.slice(-4), { text, level, at: Date.now() }];
    this.changed('notice');
  }

  can(role) {
    const rank = { viewer: 0, operator: 1, admin: 2 };
    return !!this.user && rank[this.user.role] >= rank[role];
  }

  // --- snapshot -------------------------------------------------------------------------

  loadSnapshot(messages, lastId) {
    const nodes = new Map();
    const pins = new Map();
    const clusters = new Map();
    for (const m of messages) {
      if (m.type === 'node.snapshot') nodes.set(m.node_id, { ...this.nodes.get(m.node_id), ...m.data });
      else if (m.type === 'gpio.snapshot') pins.set(m.resource, m.data);
      else if (m.type === 'cluster.snapshot') clusters.set(m.cluster_id, { id: m.cluster_id, ...m.data });
    }
    this.nodes = nodes;
    this.pins = pins;
    this.clusters = clusters;
    for (const [name, p] of this.pending) {
      const pin = pins.get(name);
      if (!pin || confirmedByStatus(pin, p)) this.pending.delete(name);
    }
    this.lastId = lastId;
    this.changed('nodes');
    this.changed('gpio');
    this.changed('clusters');
  }

  // --- events ---------------------------------------------------------------------------

  /** Older events from REST history, merged into the log without duplicates. */
  addHistory(list) {
    let added = false;
    for (const event of list) {
      if (!event.id || this.eventIds.has(event.id)) continue;
      this.eventIds.add(event.id);
      this.events.push(event);
      if (event.type === 'node.health.reported') this.recordHealth(event);
      added = true;
    }
    if (!added) return;
    this.events.sort((a, b) => cmpId(a.id, b.id));
    this.trimEvents();
    this.changed('events');
    this.changed('nodes');
  }

  trimEvents() {
    if (this.events.length <= MAX_EVENTS) return;
    for (const old of this.events.splice(0, this.events.length - MAX_EVENTS)) this.eventIds.delete(old.id);
  }

  apply(event) {
    if (this.eventIds.has(event.id)) return;
    this.eventIds.add(event.id);
    this.events.push(event);
    this.trimEvents();
    this.lastId = event.id;
    this.changed('events');
    const d = event.data || {};
    switch (event.type) {
      case 'node.discovered': {
        const node = this.nodes.get(d.node_id);
        this.nodes.set(d.node_id, {
          id: d.node_id, status: 'discovered', ...node,
          ip_address: d.ip_address || node?.ip_address, hostname: d.hostname || node?.hostname,
          source: d.source || node?.source,
        });
        this.changed('nodes');
        break;
      }
      case 'node.status.changed': {
        const node = this.nodes.get(d.node_id) || { id: d.node_id };
        this.nodes.set(d.node_id, { ...node, status: d.status, status_reason: d.reason, last_seen: this.seen(node, event) });
        this.changed('nodes');
        break;
      }
      case 'node.removed':
        this.nodes.delete(d.node_id);
        this.health.delete(d.node_id);
        this.changed('nodes');
        break;
      case 'node.health.reported': {
        this.recordHealth(event);
        const node = this.nodes.get(d.node_id);
        if (node) this.nodes.set(d.node_id, { ...node, last_seen: this.seen(node, event) });
        this.changed('nodes');
        break;
      }
      case 'gpio.state.changed':
        this.gpioState(event);
        break;
      case 'gpio.resource.changed':
        if (this.onResourceChanged) this.onResourceChanged(d);
        break;
      case 'cluster.node.added':
      case 'cluster.node.removed': {
        const cluster = this.clusters.get(d.cluster_id) || { id: d.cluster_id };
        const members = new Set(clusterMembers(cluster));
        if (event.type === 'cluster.node.added') members.add(d.node_id);
        else members.delete(d.node_id);
        this.clusters.set(d.cluster_id, { ...cluster, members: [...members] });
        this.changed('clusters');
        break;
      }
      case 'job.step.changed': {
        const job = this.jobs.get(d.job_id) || { id: d.job_id, steps: [] };
        const steps = job.steps.filter((s) => s.name !== d.step);
        const existing = job.steps.find((s) => s.name === d.step);
        const step = { ...existing, name: d.step, status: d.status, message: d.message, at: event.timestamp };
        const index = existing ? job.steps.indexOf(existing) : steps.length;
        steps.splice(index, 0, step);
        this.jobs.set(d.job_id, { ...job, node_id: d.node_id, cluster_id: d.cluster_id || job.cluster_id, steps, updated: event.timestamp });
        this.changed('jobs');
        break;
      }
      default:
        break;
    }
  }

  seen(node, event) {
    return Math.max(node?.last_seen || 0, eventTime(event) / 1000);
  }

  recordHealth(event) {
    const d = event.data || {};
    if (!d.node_id || !d.metrics) return;
    const list = this.health.get(d.node_id) || [];
    const t = typeof d.metrics.time === 'number' ? d.metrics.time * 1000 : eventTime(event);
    if (list.length && list[list.length - 1].t >= t) {
      if (list.some((p) => p.t === t)) return;
      list.push({ t, m: d.metrics });
      list.sort((a, b) => a.t - b.t);
    } else {
      list.push({ t, m: d.metrics });
    }
    if (list.length > MAX_HISTORY) list.splice(0, list.length - MAX_HISTORY);
    this.health.set(d.node_id, list);
  }

  latestHealth(nodeId) {
    const list = this.health.get(nodeId);
    return list && list.length ? list[list.length - 1] : null;
  }

  gpioState(event) {
    const d = event.data || {};
    const pin = this.pins.get(d.resource);
    if (pin) {
      const status = { ...pin.status, state: d.state, observedAt: event.timestamp, lastChangedBy: d.actor ?? undefined };
      if (d.pwm_duty !== null && d.pwm_duty !== undefined) status.pwmDuty = d.pwm_duty;
      status.phase = 'Applied';
      status.message = '';
      const p = this.pending.get(d.resource);
      if (p && d.request_id && d.request_id === p.requestId) {
        if (p.generation) status.observedGeneration = Math.max(status.observedGeneration || 0, p.generation);
        this.pending.delete(d.resource);
      }
      this.pins.set(d.resource, { ...pin, status });
    }
    if (d.request_id) this.confirmed.add(d.request_id);
    if (this.confirmed.size > 200) this.confirmed.delete(this.confirmed.values().next().value);
    this.changed('gpio');
  }

  /** Replace one resource with what REST returned (PATCH answer or a re-read). */
  putPin(pin, { requestId } = {}) {
    const name = pin.metadata.name;
    const current = this.pins.get(name);
    const p = this.pending.get(name);
    const mine = p && requestId && p.requestId === requestId;
    if (requestId && this.confirmed.has(requestId)) {
      // The agent's confirmation raced ahead of this answer: its status is the newer one.
      if (mine) this.pending.delete(name);
      const observed = Math.max(current?.status?.observedGeneration || 0, pin.metadata.generation);
      this.pins.set(name, { ...pin, status: { ...pin.status, ...current?.status, observedGeneration: observed, phase: 'Applied', message: '' } });
      this.changed('gpio');
      return;
    }
    if (mine) p.generation = pin.metadata.generation;
    if (current?.status?.observedAt && pin.status?.observedAt && current.status.observedAt > pin.status.observedAt) {
      // An event newer than this read already told us what the pin is.
      pin = { ...pin, status: { ...pin.status, state: current.status.state, pwmDuty: current.status.pwmDuty, observedAt: current.status.observedAt } };
    }
    if (p && confirmedByStatus(pin, p)) this.pending.delete(name);
    this.pins.set(name, pin);
    this.changed('gpio');
  }

  removePin(name) {
    this.pins.delete(name);
    this.pending.delete(name);
    this.changed('gpio');
  }

  isPending(name) {
    if (this.pending.has(name)) return true;
    const pin = this.pins.get(name);
    return !!pin && pin.status?.phase === 'Pending';
  }

  nodePins(nodeId) {
    return [...this.pins.values()].filter((p) => p.spec?.nodeName === nodeId)
      .sort((a, b) => a.metadata.name.localeCompare(b.metadata.name));
  }
}

function confirmedByStatus(pin, pending) {
  const observed = pin.status?.observedGeneration || 0;
  return pending.generation ? observed >= pending.generation : false;
}

export function clusterMembers(cluster) {
  if (Array.isArray(cluster.members)) return cluster.members;
  if (Array.isArray(cluster.nodes)) return cluster.nodes.map((n) => (typeof n === 'string' ? n : n.id || n.node_id));
  if (typeof cluster.nodes === 'string') {
    try { return JSON.parse(cluster.nodes); } catch { return cluster.nodes.split(',').filter(Boolean); }
  }
  return [];
}
