// Scheduled jobs: the caller's jobs (admins: everyone's, filtered by user), create, edit, enable/disable,
// delete, run now, and each job's runs, whose sessions open in the chat view.

import {del, get, post, put, session as auth} from './api.js';
import {dialog, h, replace, toast} from './dom.js';
import {errorBox, settingsForm} from './forms.js';
import {loading, userName, userPicker} from './views.js';

const RUNS_SHOWN = 20;
const POLL_MS = 2000;
const ACTIVE_RUN = new Set(['pending', 'running']);
const SCHEDULE_INPUTS = {interval: 'every_ms', cron: 'expr', one_shot: 'at'};
const NEW_JOB = {schedule: {kind: 'cron'}, session_mode: 'isolated', enabled: true, delete_after_run: false};
const UNITS = [[3600000, 'h'], [60000, 'min'], [1000, 's']];

const JOB_FIELDS = [
  {name: 'name', label: 'Name', type: 'text'},
  {name: 'prompt', label: 'Prompt', type: 'textarea'},
  {name: 'schedule.kind', label: 'Schedule', type: 'select',
    options: [['interval', 'Every … (interval)'], ['cron', 'Cron expression'], ['one_shot', 'Once (one-shot)']]},
  {name: 'schedule.every_ms', label: 'Every (milliseconds)', type: 'number', placeholder: '3600000',
    help: 'At least 1000 (one second).'},
  {name: 'schedule.expr', label: 'Cron expression', type: 'text', placeholder: '0 9 * * MON-FRI',
    help: 'minute hour day month weekday (Sunday = 0 or 7), or 6 fields with leading seconds.'},
  {name: 'schedule.at', label: 'Run at', type: 'text', placeholder: '2030-12-24T09:00:00',
    help: "In the job's timezone, or RFC 3339 with an offset."},
  {name: 'timezone', label: 'Timezone', type: 'text', list: 'timezones', nullable: true, placeholder: 'Europe/Rome',
    help: "IANA name; empty: the agent's timezone, else UTC."},
  {name: 'session_mode', label: 'Session', type: 'select',
    options: [['isolated', 'A fresh session per run'], ['main', 'The main session']]},
  {name: 'max_retries', label: 'Retries on failure', type: 'number', nullable: true, help: 'Empty: the [cron] default.'},
  {name: 'timeout_secs', label: 'Timeout (seconds)', type: 'number', nullable: true, help: 'Empty: the [cron] default.'},
  {name: 'enabled', label: 'Enabled', type: 'checkbox'},
  {name: 'delete_after_run', label: 'Delete a one-shot after it runs', type: 'checkbox'},
];

export function cronView(name, owner) {
  return name ? loading(() => jobDetail({name, user_id: owner || null})) : jobList();
}

// --- helpers ---------------------------------------------------------------------------

const when = (iso) => (iso ? new Date(iso).toLocaleString() : '—');

/** The API path of `job` (admins name its owner, so another user's job is found). */
function jobUrl(job, suffix = '', params = {}) {
  const query = new URLSearchParams(params);
  if (auth.isAdmin && job.user_id) query.set('user_id', job.user_id);
  const search = query.toString();
  return `/api/cron/jobs/${encodeURIComponent(job.name)}${suffix}${search ? `?${search}` : ''}`;
}

function jobHash(job) {
  return `#/cron/${encodeURIComponent(job.name)}${job.user_id ? `/${encodeURIComponent(job.user_id)}` : ''}`;
}

function every(ms) {
  const [size, unit] = UNITS.find(([step]) => ms % step === 0) || [1, 'ms'];
  return `every ${ms / size} ${unit}`;
}

function describeSchedule(schedule) {
  if (schedule.kind === 'interval') return every(schedule.every_ms);
  if (schedule.kind === 'one_shot') return `once at ${schedule.at}`;
  return schedule.expr;
}

const scheduleOf = (kind, value) => (value === '' || value == null ? {kind} : {kind, [SCHEDULE_INPUTS[kind]]: value});

/** The API body from the form: only the chosen kind's schedule input, no empty optional values. */
function jobBody(values) {
  const {kind} = values.schedule;
  const body = {...values, schedule: scheduleOf(kind, values.schedule[SCHEDULE_INPUTS[kind]])};
  for (const [key, value] of Object.entries(body)) if (value === null || value === '') delete body[key];
  return body;
}

/** The entries of `body` that differ from `job` (PUT is a partial update). */
function changes(job, body) {
  const current = {...job, schedule: scheduleOf(job.schedule.kind, job.schedule[SCHEDULE_INPUTS[job.schedule.kind]])};
  return Object.fromEntries(Object.entries(body).filter(([key, value]) =>
    JSON.stringify(value) !== JSON.stringify(current[key])));
}

/** The job form; only the input of the chosen schedule kind is shown. */
function jobForm({title = null, load, save}) {
  const zones = h('datalist', {id: 'timezones'},
    (Intl.supportedValuesOf?.('timeZone') || []).map((zone) => h('option', {value: zone})));
  const root = settingsForm({title, fields: JOB_FIELDS, extra: zones, load, save});
  const form = root.querySelector('form');
  const kind = form.elements['schedule.kind'];
  const showKindInput = () => {
    for (const [name, input] of Object.entries(SCHEDULE_INPUTS)) {
      form.querySelector(`.field[data-field="schedule.${input}"]`).hidden = name !== kind.value;
    }
  };
  form.addEventListener('change', showKindInput);  // also fired once the loaded values are in
  showKindInput();
  return root;
}

function enabledBadge(job) {
  return h('span', {class: `badge ${job.enabled ? 'enabled' : 'disabled'}`, text: job.enabled ? 'enabled' : 'disabled'});
}

// --- list ------------------------------------------------------------------------------

function jobList() {
  const body = h('div', {}, h('p', {class: 'muted', text: 'Loading…'}));
  const picker = userPicker(() => show());
  const show = async () => {
    const query = picker.value ? `?user_id=${encodeURIComponent(picker.value)}` : '';
    try {
      const [jobs, users] = await Promise.all([get(`/api/cron/jobs${query}`), picker.users]);
      const names = new Map(users.map((user) => [user.id, userName(user)]));
      const owner = (job) => (job.user_id ? names.get(job.user_id) || job.user_id : 'agent');
      replace(body, jobs.length ? jobsTable(jobs, owner) : h('p', {class: 'muted', text: 'No scheduled jobs yet.'}));
    } catch (error) {
      replace(body, errorBox(error));
    }
  };
  show();
  return h('section', {class: 'panel cron'}, h('h2', {text: 'Scheduled jobs'}),
    h('div', {class: 'inline-form'},
      h('button', {class: 'primary new-job', type: 'button', text: 'New job', onclick: () => createDialog(show)}),
      picker),
    body);
}

function jobsTable(jobs, owner) {
  const headings = ['Name', auth.isAdmin ? 'Owner' : null, 'Schedule', 'Timezone', 'Status', 'Next run', 'Last run',
    'Last error'].filter(Boolean);
  return h('div', {class: 'table-scroll'}, h('table', {class: 'table jobs'}, h('thead', {}, h('tr', {}, headings.map((t) => h('th', {text: t})))),
    h('tbody', {}, jobs.map((job) => h('tr', {dataset: {jobName: job.name}},
      h('td', {}, h('a', {href: jobHash(job), text: job.name})),
      auth.isAdmin ? h('td', {class: 'owner', text: owner(job)}) : null,
      h('td', {}, h('code', {text: describeSchedule(job.schedule)})),
      h('td', {text: job.timezone}), h('td', {}, enabledBadge(job)),
      h('td', {class: 'next-run', text: when(job.next_run_at)}), h('td', {class: 'last-run', text: when(job.last_run_at)}),
      h('td', {class: 'job-error', text: job.last_error || ''}))))));
}

function createDialog(onCreated) {
  const box = dialog('New scheduled job', jobForm({load: async () => NEW_JOB, save: async (values) => {
    const job = await post('/api/cron/jobs', jobBody(values));
    box.close();
    toast(`Job ${job.name} created.`);
    onCreated();
  }}));
}

// --- one job ---------------------------------------------------------------------------

function runsTable(runs) {
  if (!runs.length) return h('p', {class: 'muted', text: 'No runs yet.'});
  return h('div', {class: 'table-scroll'}, h('table', {class: 'table runs'},
    h('thead', {}, h('tr', {}, ['Started', 'Status', 'Finished', 'Result', ''].map((t) => h('th', {text: t})))),
    h('tbody', {}, runs.map((run) => h('tr', {dataset: {runId: run.id}},
      h('td', {text: when(run.started_at)}),
      h('td', {}, h('span', {class: `badge status-${run.status}`, text: run.status})),
      h('td', {text: when(run.completed_at)}), h('td', {class: 'run-result', text: run.result_summary || ''}),
      h('td', {}, run.session_id ? h('a', {class: 'open-session', href: `#/chat/${run.session_id}`, text: 'Open session'})
        : null))))));
}

function jobFacts(job, ownerName) {
  const retry = job.retry_count ? `retry ${job.retry_count} at ${when(job.retry_at)}` : null;
  const rows = [['Schedule', h('code', {text: describeSchedule(job.schedule)})], ['Timezone', job.timezone],
    ['Status', enabledBadge(job)], ['Next run', when(job.next_run_at)], ['Last run', when(job.last_run_at)],
    ['Pending retry', retry], ['Last error', job.last_error], auth.isAdmin ? ['Owner', ownerName] : null];
  return h('table', {class: 'table facts'}, h('tbody', {}, rows.filter((row) => row && row[1]).map(([label, value]) =>
    h('tr', {}, h('th', {text: label}), h('td', {}, value)))));
}

/** Admins: the name of the job's owner ('agent' for agent-level jobs). */
async function ownerOf(job) {
  if (!auth.isAdmin) return null;
  if (!job.user_id) return 'agent';
  return userName(await get(`/api/settings/auth/users/${encodeURIComponent(job.user_id)}`).catch(() => ({id: job.user_id})));
}

async function jobDetail(address) {
  let job = await get(jobUrl(address));
  const [runs, ownerName] = await Promise.all([get(jobUrl(job, '/runs', {limit: RUNS_SHOWN})), ownerOf(job)]);
  const message = h('div');
  const facts = h('div');
  const runsBox = h('div', {}, runsTable(runs));
  const toggle = h('button', {class: 'toggle', type: 'button'});
  const showJob = () => {
    replace(facts, jobFacts(job, ownerName));
    toggle.textContent = job.enabled ? 'Disable' : 'Enable';
  };
  let pollTimer = null;
  const refreshRuns = async () => {
    if (!document.contains(runsBox)) return;  // the screen was left
    try {
      const [fresh, latest] = await Promise.all([get(jobUrl(job)), get(jobUrl(job, '/runs', {limit: RUNS_SHOWN}))]);
      job = fresh;
      showJob();
      replace(runsBox, runsTable(latest));
      clearTimeout(pollTimer);
      if (latest.some((run) => ACTIVE_RUN.has(run.status))) pollTimer = setTimeout(refreshRuns, POLL_MS);
    } catch (error) {
      replace(message, errorBox(error));
    }
  };
  const act = (fn) => async () => {
    replace(message);
    try { await fn(); } catch (error) { replace(message, errorBox(error)); }
  };
  toggle.addEventListener('click', act(async () => {
    job = await put(jobUrl(job), {enabled: !job.enabled});
    showJob();
  }));
  const runNow = act(async () => {
    await post(jobUrl(job, '/run'));
    toast(`${job.name} started.`);
    await refreshRuns();
  });
  const remove = act(async () => {
    if (!confirm(`Delete job ${job.name}?`)) return;
    await del(jobUrl(job));
    toast(`Job ${job.name} deleted.`);
    location.hash = '#/cron';
  });
  const edit = jobForm({title: 'Edit', load: async () => job, save: async (values) => {
    const changed = changes(job, jobBody(values));
    if (!Object.keys(changed).length) return;
    const saved = await put(jobUrl(job), changed);
    if (saved.name !== job.name) location.hash = jobHash(saved);
    job = saved;
    showJob();
  }});
  showJob();
  if (runs.some((run) => ACTIVE_RUN.has(run.status))) pollTimer = setTimeout(refreshRuns, POLL_MS);
  return h('section', {class: 'panel cron-job'}, h('p', {}, h('a', {href: '#/cron', text: '← All jobs'})),
    h('h2', {text: job.name}), message, facts,
    h('div', {class: 'form-actions'}, h('button', {class: 'primary run-now', type: 'button', text: 'Run now', onclick: runNow}),
      toggle, h('button', {class: 'danger delete', type: 'button', text: 'Delete', onclick: remove})),
    h('h3', {text: 'Runs (newest first)'}), runsBox, edit);
}
