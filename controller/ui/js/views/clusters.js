// K3s clusters: list, create from discovered nodes, add and remove nodes, per-step
// provisioning progress live from job.step.changed, and the job's output when it fails.
// Works read-only from the /ws snapshot when the controller has no cluster API.

import * as api from '../api.js';
import { ago, h, replace } from '../dom.js';
import { clusterMembers } from '../store.js';
import { empty, nodeLink, statusBadge } from './common.js';

const REFRESH_DEBOUNCE_MS = 300;
const FINISHED = new Set(['succeeded', 'failed', 'interrupted']);

/** Members from the REST shape, or from the snapshot's flat hash (role:<node>, state:<node>). */
function membersOf(cluster) {
  if (Array.isArray(cluster.members) && cluster.members.length && typeof cluster.members[0] === 'object') return cluster.members;
  const out = new Map();
  for (const [key, value] of Object.entries(cluster)) {
    const [kind, node] = key.split(':');
    if (node && (kind === 'role' || kind === 'state' || kind === 'job')) {
      out.set(node, { ...out.get(node), node_id: node, [kind === 'job' ? 'job_id' : kind]: value });
    }
  }
  for (const node of clusterMembers(cluster)) if (!out.has(node)) out.set(node, { node_id: node });
  return [...out.values()];
}

export function mount(root, app, [focus]) {
  const store = app.store;
  const admin = store.can('admin');
  let clusters = null; // from REST; null: not loaded or no API
  let jobs = new Map(); // job id -> job
  let apiMissing = false;
  let loadError = '';
  let timer = 0;
  const body = h('div', { id: 'clusters', class: 'cluster-list' });
  const form = h('div');
  replace(root, h('div', { class: 'page-head' }, h('h1', {}, 'Clusters')), form, body);

  async function load() {
    try {
      const listed = await api.optional('/api/v1/clusters');
      if (listed === null) {
        apiMissing = true;
      } else {
        clusters = listed.items || [];
        const recent = await api.optional('/api/v1/jobs?limit=200');
        jobs = new Map((recent?.items || []).map((j) => [j.id, j]));
      }
      loadError = '';
    } catch (err) {
      loadError = err.message;
    }
    render();
  }

  function refreshSoon() {
    clearTimeout(timer);
    timer = setTimeout(load, REFRESH_DEBOUNCE_MS);
  }

  function allClusters() {
    if (clusters) return clusters;
    return [...store.clusters.values()].map((c) => ({ ...c, name: c.name || c.id, members: membersOf(c) }));
  }

  function claimed() {
    const taken = new Map();
    for (const c of allClusters()) for (const m of membersOf(c)) taken.set(m.node_id, c.name || c.id);
    return taken;
  }

  // The form is built once so typing is never lost; only its node list follows the fleet.
  const chosen = new Map(); // node id -> server | agent
  const picksBox = h('div', { class: 'pick-nodes', id: 'cluster-picks' });
  const nameInput = h('input', { type: 'search', id: 'cluster-name', placeholder: 'name, e.g. home-lab', 'aria-label': 'Cluster name', autocomplete: 'off' });
  const versionInput = h('input', { type: 'search', id: 'cluster-version', placeholder: 'K3s version (empty: stable)', 'aria-label': 'K3s version', autocomplete: 'off' });
  const formError = h('p', { class: 'bad small', role: 'alert' });
  const submit = h('button', { type: 'submit', class: 'primary' }, 'Create and provision');
  const createForm = h('form', { class: 'card form-grid', id: 'cluster-create', onsubmit: async (e) => {
    e.preventDefault();
    const servers = [...chosen].filter(([, r]) => r === 'server').map(([n]) => n).sort();
    const agents = [...chosen].filter(([, r]) => r === 'agent').map(([n]) => n).sort();
    const payload = { name: nameInput.value.trim(), servers, agents };
    if (versionInput.value.trim()) payload.version = versionInput.value.trim();
    submit.disabled = true;
    formError.textContent = '';
    try {
      const res = await api.post('/api/v1/clusters', payload);
      for (const job of res.data?.jobs || []) jobs.set(job.id, job);
      store.notice(`Cluster ${payload.name} created; provisioning ${servers.length + agents.length} node(s).`);
      nameInput.value = '';
      chosen.clear();
      await load();
    } catch (err) {
      formError.textContent = err.message;
    } finally {
      submit.disabled = false;
    }
  } },
  h('h2', {}, 'New cluster'),
  h('div', { class: 'toolbar wide' }, nameInput, versionInput),
  h('label', {}, 'Give each node to include a role (an odd number of servers keeps etcd quorum):'),
  picksBox, h('div', {}, submit), formError);

  function renderForm() {
    if (!admin || apiMissing) { replace(form); return; }
    if (!form.contains(createForm)) replace(form, createForm);
    const taken = claimed();
    const nodes = [...store.nodes.values()].sort((a, b) => a.id.localeCompare(b.id));
    replace(picksBox, nodes.length ? nodes.map((n) => {
      const role = h('select', { 'aria-label': `role of ${n.id}`, disabled: taken.has(n.id), dataset: { node: n.id },
        onchange: () => { if (role.value) chosen.set(n.id, role.value); else chosen.delete(n.id); } },
      h('option', { value: '' }, '—'), h('option', { value: 'server' }, 'server'), h('option', { value: 'agent' }, 'agent'));
      role.value = taken.has(n.id) ? '' : chosen.get(n.id) || '';
      return h('label', { class: taken.has(n.id) ? 'muted' : '' }, `${n.id} `, statusBadge(n.status), ' ', role,
        taken.has(n.id) ? h('span', { class: 'small' }, ` in ${taken.get(n.id)}`) : null);
    }) : h('span', { class: 'muted' }, 'No nodes known yet.'));
  }

  function jobsFor(cluster) {
    return [...jobs.values()].filter((j) => j.cluster_id === cluster.id)
      .sort((a, b) => (b.created_at || 0) - (a.created_at || 0));
  }

  function stepList(job) {
    const live = store.jobs.get(job.id);
    const steps = (job.steps || []).map((s) => {
      const update = live?.steps.find((x) => x.name === s.name);
      return update ? { ...s, status: update.status, message: update.message || s.message } : s;
    });
    for (const s of live?.steps || []) if (s.name !== 'job' && !steps.some((x) => x.name === s.name)) steps.push(s);
    return steps;
  }

  function jobView(job) {
    const live = store.jobs.get(job.id)?.steps.find((s) => s.name === 'job');
    const status = live?.status || job.status;
    const steps = stepList(job);
    const failed = steps.find((s) => s.status === 'failed');
    return h('div', { class: 'job', dataset: { job: job.id, status } },
      h('div', { class: 'pin-head' }, h('b', {}, `${job.kind || 'job'} ${job.node_id}`), h('span', { class: 'muted small' }, `${job.role || ''} · ${job.id}`),
        h('span', { class: `status status-${status === 'succeeded' ? 'ready' : status === 'failed' ? 'failed' : 'provisioning'}` }, status)),
      h('ol', { class: 'steps' }, steps.map((s) => h('li', { class: `step step-${s.status}`, dataset: { step: s.name, status: s.status } },
        h('span', {}, s.name), h('span', { class: 'muted small' }, s.status), s.message ? h('span', { class: 'small' }, s.message) : null))),
      status === 'failed' || failed ? [
        job.error || failed?.message ? h('p', { class: 'bad small job-error' }, job.error || `${failed.name}: ${failed.message}`) : null,
        failed?.output || job.steps?.find((s) => s.name === (job.failed_step || failed?.name))?.output
          ? h('pre', { class: 'job-output', dataset: { step: failed?.name || job.failed_step } }, (job.steps.find((s) => s.name === (job.failed_step || failed?.name)) || failed).output)
          : null,
        admin && FINISHED.has(status) && status !== 'succeeded' ? h('button', { type: 'button', class: 'small', onclick: async () => {
          try { jobs.set(job.id, (await api.post(`/api/v1/jobs/${job.id}/retry`)).data); render(); } catch (err) { store.notice(err.message, 'error'); }
        } }, 'Retry') : null] : null);
  }

  function clusterCard(cluster) {
    const members = membersOf(cluster);
    const taken = claimed();
    const free = [...store.nodes.keys()].filter((id) => !taken.has(id)).sort();
    const addSelect = h('select', { 'aria-label': 'node to add' }, free.map((id) => h('option', { value: id }, id)));
    const addRole = h('select', { 'aria-label': 'role' }, h('option', { value: 'agent' }, 'agent'), h('option', { value: 'server' }, 'server'));
    const clusterJobs = jobsFor(cluster);
    return h('section', { class: `card${focus === cluster.id ? ' selected' : ''}`, dataset: { cluster: cluster.id } },
      h('div', { class: 'page-head' }, h('h2', {}, cluster.name || cluster.id), statusBadge(cluster.status || 'unknown'),
        h('span', { class: 'muted small' }, [cluster.version || cluster.channel || 'stable', cluster.updated_at ? `updated ${ago(Number(cluster.updated_at))}` : null].filter(Boolean).join(' · '))),
      h('ul', { class: 'members' }, members.length ? members.map((m) => h('li', { class: 'member', dataset: { node: m.node_id } },
        nodeLink(m.node_id), h('span', { class: 'muted small' }, [m.role, m.state].filter(Boolean).join(' · ')),
        admin && !apiMissing ? h('button', { type: 'button', class: 'ghost small', 'aria-label': `remove ${m.node_id}`, onclick: async () => {
          if (!confirm(`Remove ${m.node_id} from ${cluster.name}? Its K3s is drained and uninstalled.`)) return;
          try { const res = await api.del(`/api/v1/clusters/${encodeURIComponent(cluster.id)}/nodes/${encodeURIComponent(m.node_id)}`); if (res.data) jobs.set(res.data.id, res.data); refreshSoon(); } catch (err) { store.notice(err.message, 'error'); }
        } }, '✕') : null)) : h('li', { class: 'muted' }, 'No nodes.')),
      admin && !apiMissing && free.length ? h('form', { class: 'toolbar add-node', onsubmit: async (e) => {
        e.preventDefault();
        try {
          const res = await api.post(`/api/v1/clusters/${encodeURIComponent(cluster.id)}/nodes`, { node_id: addSelect.value, role: addRole.value });
          if (res.data) jobs.set(res.data.id, res.data);
          refreshSoon();
        } catch (err) { store.notice(err.message, 'error'); }
      } }, addSelect, addRole, h('button', { type: 'submit' }, 'Add node')) : null,
      clusterJobs.length ? h('div', { class: 'jobs' }, h('h3', {}, 'Provisioning'), clusterJobs.slice(0, 10).map(jobView)) : null);
  }

  function render() {
    renderForm();
    const list = allClusters();
    const notes = [];
    if (apiMissing) notes.push(h('p', { class: 'muted small' }, 'This controller does not offer cluster provisioning; clusters are shown read-only.'));
    if (loadError) notes.push(h('p', { class: 'bad small' }, `Clusters not loaded: ${loadError}`));
    replace(body, notes, list.length ? list.map(clusterCard) : empty('No clusters yet.', admin && !apiMissing ? ' Create one from the nodes above.' : ''));
  }

  render();
  load();
  return {
    title: 'Clusters',
    update(topics) {
      if (topics.has('jobs')) {
        // Step progress is drawn from the events right away; a finished job is re-read for its output.
        for (const job of store.jobs.values()) {
          const known = jobs.get(job.id);
          const final = job.steps.find((s) => s.name === 'job' && FINISHED.has(s.status));
          if (!known || (final && known.status !== final.status)) refreshSoon();
        }
        render();
      } else if (topics.has('clusters') || (topics.has('nodes') && !document.activeElement?.closest('form'))) {
        if (topics.has('clusters')) refreshSoon();
        render();
      }
    },
    unmount() { clearTimeout(timer); },
  };
}
