// Screens besides chat and cron: memory search, usage chart, settings, users & keys, skills, instances.

import {del, get, post, put, session as auth} from './api.js';
import {copyText, dialog, h, replace, toast} from './dom.js';
import {errorBox, settingsForm} from './forms.js';

const AGENT_FILES = ['SOUL.md', 'HEARTBEAT.md', 'BOOT.md', 'BOOTSTRAP.md'];

export function adminOnly() {
  return h('section', {class: 'panel'}, h('h2', {text: 'Admins only'}),
    h('p', {class: 'error-box', text: 'This screen is for administrators. Ask an admin if you need a change here.'}));
}

/** Wrap async screen code: shows "Loading…" then the result, or the error in place. */
export function loading(render) {
  const root = h('div', {class: 'loading', text: 'Loading…'});
  render().then((node) => root.replaceWith(node), (error) => replace(root, errorBox(error)));
  return root;
}

// --- memory ----------------------------------------------------------------------------

function highlighted(text, words) {
  const pattern = words.map((w) => w.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')).join('|');
  if (!pattern) return [text];
  return text.split(new RegExp(`(${pattern})`, 'gi')).map((piece, index) =>
    (index % 2 ? h('mark', {text: piece}) : piece));
}

export function memoryView() {
  const results = h('ol', {class: 'hits'});
  const input = h('input', {type: 'search', name: 'q', placeholder: 'Search memory…', 'aria-label': 'Search memory'});
  const form = h('form', {class: 'search', onsubmit: async (event) => {
    event.preventDefault();
    const query = input.value.trim();
    if (!query) return;
    replace(results, h('li', {class: 'muted', text: 'Searching…'}));
    try {
      const hits = await get(`/api/memory/search?q=${encodeURIComponent(query)}&limit=20`);
      const words = query.split(/\s+/).filter(Boolean);
      replace(results, hits.length ? hits.map((hit) => h('li', {class: 'hit'},
        h('div', {class: 'hit-source'}, h('strong', {text: hit.source}),
          h('span', {class: 'muted', text: ` lines ${hit.line_start}–${hit.line_end}`})),
        h('pre', {class: 'hit-text'}, highlighted(hit.text, words))))
        : h('li', {class: 'muted', text: 'Nothing found.'}));
    } catch (error) {
      replace(results, h('li', {}, errorBox(error)));
    }
  }}, input, h('button', {class: 'primary', type: 'submit', text: 'Search'}));
  return h('section', {class: 'panel'}, h('h2', {text: 'Memory'}), form, results);
}

// --- usage -----------------------------------------------------------------------------

const CHART_HEIGHT = 160;
const SVG = 'http://www.w3.org/2000/svg';

function svg(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) el.setAttribute(name, value);
  el.append(...children);
  return el;
}

const tokens = (counters) => (counters.input_tokens || 0) + (counters.output_tokens || 0);

/** A stacked bar per day (one colour per model) from the `daily` list of GET /api/usage. */
function usageChart(daily) {
  const models = [...new Set(daily.flatMap((day) => day.models.map((m) => m.model)))];
  const max = Math.max(1, ...daily.map(tokens));
  const barWidth = 18;
  const chart = svg('svg', {class: 'chart', viewBox: `0 0 ${Math.max(daily.length, 1) * (barWidth + 6)} ${CHART_HEIGHT}`,
    role: 'img', 'aria-label': 'Tokens per day'});
  daily.forEach((day, index) => {
    let top = CHART_HEIGHT;
    for (const row of day.models) {
      const height = (tokens(row) / max) * (CHART_HEIGHT - 10);
      top -= height;
      const title = svg('title');
      title.textContent = `${day.date} ${row.model}: ${tokens(row)} tokens, $${Number(row.cost_usd).toFixed(4)}`;
      chart.append(svg('rect', {x: index * (barWidth + 6), y: top, width: barWidth, height,
        class: `series-${models.indexOf(row.model) % 6}`}, title));
    }
  });
  const legend = h('ul', {class: 'legend'}, models.map((model, i) =>
    h('li', {}, h('span', {class: `swatch series-${i % 6}`}), model)));
  return [chart, legend];
}

function usageByUser(users) {
  if (!auth.isAdmin || !users.length) return null;
  return h('table', {class: 'table'}, h('thead', {}, h('tr', {}, ['User', 'Runs', 'Tokens', 'Cost'].map((t) => h('th', {text: t})))),
    h('tbody', {}, users.map((u) => h('tr', {}, h('td', {text: u.user_id}), h('td', {text: u.runs}),
      h('td', {text: tokens(u)}), h('td', {text: `$${u.cost_usd.toFixed(4)}`})))));
}

export const userName = (user) => user.display_name || user.email || user.id;

/** Admins: a user filter ('All users' or one user) calling `onChange`; hidden for everyone else.
 * `picker.users` is the promise of the users listed (none for non-admins or when they cannot load). */
export function userPicker(onChange) {
  const picker = h('select', {'aria-label': 'User', hidden: !auth.isAdmin, onchange: onChange});
  picker.users = auth.isAdmin ? get('/api/settings/auth/users').catch(() => []) : Promise.resolve([]);
  picker.users.then((users) => users.length && replace(picker, h('option', {value: '', text: 'All users'}),
    users.map((u) => h('option', {value: u.id, text: userName(u)}))));
  return picker;
}

export function usageView() {
  const body = h('div');
  const userSelect = userPicker(() => show());
  const show = async () => {
    const user = userSelect.value ? `&user_id=${encodeURIComponent(userSelect.value)}` : '';
    try {
      const report = await get(`/api/usage?days=30${user}`);
      const {totals} = report;
      replace(body, h('p', {class: 'usage-total',
        text: `${totals.runs} runs · ${tokens(totals)} tokens · $${totals.cost_usd.toFixed(4)} in the last ${report.days} days`}),
      totals.runs ? usageChart(report.daily) : h('p', {class: 'muted', text: 'No usage recorded yet.'}),
      usageByUser(report.users));
    } catch (error) {
      replace(body, errorBox(error));
    }
  };
  show();
  return h('section', {class: 'panel'}, h('h2', {text: 'Usage'}), userSelect, body);
}

// --- settings --------------------------------------------------------------------------

const SETTINGS_TABS = [['general', 'General'], ['memory', 'Memory'], ['cron', 'Cron'], ['channels', 'Channels'],
  ['frontend', 'Frontend'], ['files', 'Agent files']];

function groupForm(group, title, fields, extra = null) {
  return settingsForm({title, fields, extra, load: () => get(`/api/settings/${group}`),
    save: (values) => put(`/api/settings/${group}`, values)});
}

function generalForm() {
  const models = h('datalist', {id: 'known-models'});
  get('/api/settings/models').then(({models: byProvider}) => replace(models,
    Object.entries(byProvider).flatMap(([provider, names]) => names.map((name) =>
      h('option', {value: name, label: provider})))), () => {});
  return groupForm('general', 'General', [
    {name: 'agent_name', label: 'Agent name', type: 'text'},
    {name: 'provider', label: 'Provider', type: 'text'},
    {name: 'model', label: 'Model', type: 'text', list: 'known-models', help: 'Pick a well-known model or type one.'},
    {name: 'max_turns', label: 'Max turns', type: 'number'},
    {name: 'max_tokens', label: 'Max tokens', type: 'number'},
    {name: 'reasoning_effort', label: 'Reasoning effort', type: 'select', options: ['', 'low', 'medium', 'high'], nullable: true},
    {name: 'followup_mode', label: 'Follow-ups', type: 'select', options: ['inject', 'queue']},
    {name: 'timezone', label: 'Timezone', type: 'text', nullable: true},
    {name: 'compaction_model', label: 'Compaction model', type: 'text', nullable: true},
    {name: 'compaction_provider', label: 'Compaction provider', type: 'text', nullable: true},
    {name: 'server_addr', label: 'Server address', type: 'text', help: 'Applies after a restart.'},
  ], models);
}

const SETTINGS_FORMS = {
  general: generalForm,
  memory: () => groupForm('memory', 'Memory', [
    {name: 'half_life_days', label: 'Half-life (days)', type: 'float'},
    {name: 'mmr_lambda', label: 'MMR lambda', type: 'float'},
    {name: 'chunk_size', label: 'Chunk size', type: 'number'},
    {name: 'chunk_overlap', label: 'Chunk overlap', type: 'number'},
    {name: 'vector_search', label: 'Vector search', type: 'checkbox'},
    {name: 'export_sessions', label: 'Export closed sessions', type: 'checkbox'}]),
  cron: () => groupForm('cron', 'Cron', [
    {name: 'default_max_retries', label: 'Default max retries', type: 'number'},
    {name: 'default_timeout_secs', label: 'Default timeout (s)', type: 'number'},
    {name: 'max_concurrent_runs', label: 'Max concurrent runs', type: 'number'}]),
  channels: () => groupForm('channels', 'Channels', [
    {name: 'telegram.enabled', label: 'Telegram enabled', type: 'checkbox'},
    {name: 'telegram.gap_minutes', label: 'Telegram session gap (minutes)', type: 'number', nullable: true},
    {name: 'telegram.stream_mode', label: 'Telegram stream mode', type: 'select', options: ['final_only', 'all_messages']}]),
  frontend: () => groupForm('frontend', 'Frontend', [
    {name: 'greeting', label: 'Greeting', type: 'text', nullable: true},
    {name: 'prompts', label: 'Prompt chips (one per line)', type: 'lines'}]),
  files: filesEditor,
};

export function settingsView(tab) {
  const current = SETTINGS_FORMS[tab] ? tab : 'general';
  return h('div', {class: 'settings'},
    h('nav', {class: 'tabs'}, SETTINGS_TABS.map(([name, label]) =>
      h('a', {href: `#/settings/${name}`, text: label, class: name === current ? 'active' : null}))),
    SETTINGS_FORMS[current]());
}

/** A text editor for named files with an unsaved-change warning. */
function fileEditor({names, load, save, title}) {
  const editor = h('textarea', {class: 'file-editor', 'aria-label': 'File content', spellcheck: false});
  const status = h('p', {class: 'form-status', role: 'status'});
  const picker = h('select', {'aria-label': 'File'}, names.map((n) => h('option', {value: n, text: n})));
  let saved = '';
  let name = names[0];
  const dirty = () => editor.value !== saved;
  const open = async () => {
    if (dirty() && !confirm('Discard unsaved changes?')) { picker.value = name; return; }
    name = picker.value;
    status.textContent = 'Loading…';
    try {
      saved = await load(name);
      editor.value = saved;
      status.textContent = '';
    } catch (error) { status.textContent = error.message; }
  };
  editor.addEventListener('input', () => { status.textContent = dirty() ? 'Unsaved changes' : ''; });
  picker.addEventListener('change', open);
  const warn = (event) => {
    if (!document.contains(editor)) window.removeEventListener('beforeunload', warn);
    else if (dirty()) event.preventDefault();
  };
  window.addEventListener('beforeunload', warn);
  editor.isDirty = dirty;
  open();
  return h('section', {class: 'panel'}, h('h2', {text: title}), picker, editor,
    h('div', {class: 'form-actions'}, h('button', {class: 'primary', type: 'button', text: 'Save', onclick: async () => {
      try {
        await save(name, editor.value);
        saved = editor.value;
        status.textContent = 'Saved.';
      } catch (error) { status.textContent = error.message; }
    }}), status));
}

function filesEditor() {
  return fileEditor({title: 'Agent files', names: AGENT_FILES,
    load: async (name) => (await get(`/api/settings/files/${name}`)).content,
    save: (name, content) => put(`/api/settings/files/${name}`, {content})});
}

// --- users & keys ----------------------------------------------------------------------

function showSecretOnce(title, secret, note) {
  const field = h('input', {class: 'secret', readOnly: true, value: secret, 'aria-label': 'New key'});
  const copied = h('span', {class: 'muted'});
  dialog(title, [h('p', {text: note}), field,
    h('button', {class: 'primary copy', type: 'button', text: 'Copy', onclick: async () => {
      await copyText(secret, field);
      copied.textContent = ' Copied.';
    }}), copied]);
}

export function usersView(userId) {
  return loading(async () => (userId ? userDetail(userId) : userList()));
}

async function userList() {
  const users = await get('/api/settings/auth/users');
  const message = h('div');
  const email = h('input', {type: 'email', name: 'email', placeholder: 'Email', 'aria-label': 'Email'});
  const name = h('input', {type: 'text', name: 'display_name', placeholder: 'Display name', 'aria-label': 'Display name'});
  const role = h('select', {name: 'role', 'aria-label': 'Role'}, h('option', {text: 'user'}), h('option', {text: 'admin'}));
  const create = h('form', {class: 'inline-form', onsubmit: async (event) => {
    event.preventDefault();
    try {
      const user = await post('/api/settings/auth/users', {email: email.value || null,
        display_name: name.value || null, role: role.value});
      location.hash = `#/users/${user.id}`;
    } catch (error) { replace(message, errorBox(error)); }
  }}, email, name, role, h('button', {class: 'primary', type: 'submit', text: 'Create user'}));
  return h('section', {class: 'panel'}, h('h2', {text: 'Users & keys'}), create, message,
    h('table', {class: 'table'}, h('thead', {}, h('tr', {}, ['Name', 'Email', 'Role', 'Status'].map((t) => h('th', {text: t})))),
      h('tbody', {}, users.map((u) => h('tr', {dataset: {userId: u.id}},
        h('td', {}, h('a', {href: `#/users/${u.id}`, text: u.display_name || u.id})),
        h('td', {text: u.email || ''}), h('td', {text: u.role}),
        h('td', {text: u.is_active ? 'active' : 'inactive'}))))));
}

async function userDetail(userId) {
  const [user, keys] = await Promise.all([get(`/api/settings/auth/users/${userId}`),
    get(`/api/settings/auth/users/${userId}/api-keys`)]);
  const message = h('div');
  const rerender = () => { location.hash = `#/users/${userId}`; window.dispatchEvent(new HashChangeEvent('hashchange')); };
  const act = (fn) => async () => {
    try { await fn(); rerender(); } catch (error) { replace(message, errorBox(error)); }
  };
  const role = h('select', {'aria-label': 'Role', onchange: act(() => put(`/api/settings/auth/users/${userId}`, {role: role.value}))},
    ['user', 'admin'].map((r) => h('option', {value: r, text: r, selected: r === user.role})));
  const label = h('input', {type: 'text', name: 'label', placeholder: 'Key label', 'aria-label': 'Key label'});
  const keyForm = h('form', {class: 'inline-form', onsubmit: async (event) => {
    event.preventDefault();
    try {
      const created = await post(`/api/settings/auth/users/${userId}/api-keys`, {label: label.value || null});
      showSecretOnce('New API key', created.key, 'Copy this key now: it is shown only once.');
      rerender();
    } catch (error) { replace(message, errorBox(error)); }
  }}, label, h('button', {class: 'primary', type: 'submit', text: 'Create key'}));
  const keyRows = keys.map((key) => h('tr', {class: key.revoked_at ? 'revoked' : null, dataset: {keyId: key.id}},
    h('td', {text: key.label || '—'}), h('td', {}, h('code', {text: `${key.prefix}…`})),
    h('td', {text: key.revoked_at ? 'revoked' : 'active'}),
    h('td', {}, key.revoked_at ? null : h('button', {type: 'button', class: 'danger revoke', text: 'Revoke',
      onclick: act(() => post(`/api/settings/auth/api-keys/${key.id}/revoke`))}))));
  return h('section', {class: 'panel user-detail'},
    h('p', {}, h('a', {href: '#/users', text: '← All users'})),
    h('h2', {text: user.display_name || user.email || user.id}), message,
    h('div', {class: 'inline-form'}, h('label', {text: 'Role '}, role),
      h('button', {type: 'button', text: user.is_active ? 'Deactivate' : 'Activate',
        onclick: act(() => post(`/api/settings/auth/users/${userId}/${user.is_active ? 'deactivate' : 'activate'}`))})),
    h('h3', {text: 'API keys'}), keyForm,
    h('table', {class: 'table keys'}, h('tbody', {}, keyRows)),
    telegramBlock(userId, act), memoryFilesBlock(userId));
}

function telegramBlock(userId, act) {
  const box = h('div', {class: 'telegram'}, h('h3', {text: 'Telegram'}));
  const idInput = h('input', {type: 'number', placeholder: 'Telegram user id', 'aria-label': 'Telegram user id'});
  const username = h('input', {type: 'text', placeholder: 'Username (optional)', 'aria-label': 'Telegram username'});
  const linkedView = (link) => [h('p', {class: 'telegram-link', text: `Linked to ${link.username || link.telegram_id}`}),
    h('button', {type: 'button', class: 'danger', text: 'Unlink',
      onclick: act(() => del(`/api/settings/auth/users/${userId}/telegram`))})];
  const linkForm = () => h('form', {class: 'inline-form', onsubmit: (event) => {
    event.preventDefault();
    act(() => put(`/api/settings/auth/users/${userId}/telegram`,
      {telegram_id: Number(idInput.value), username: username.value || null}))();
  }}, idInput, username, h('button', {type: 'submit', text: 'Link'}));
  get(`/api/settings/auth/users/${userId}/telegram`).then(
    (link) => box.append(...(link.telegram_id ? linkedView(link) : [linkForm()])),
    (error) => box.append(errorBox(error)));
  return box;
}

function memoryFilesBlock(userId) {
  const fields = {'USER.md': 'user_md', 'MEMORY.md': 'memory_md'};
  return fileEditor({title: 'Memory files', names: Object.keys(fields),
    load: async (name) => (await get(`/api/settings/users/${userId}`))[fields[name]] || '',
    save: (name, content) => put(`/api/settings/users/${userId}`, {[fields[name]]: content})});
}

// --- skills ----------------------------------------------------------------------------

export function skillsView(name) {
  return loading(async () => (name ? skillEditor(name === 'new' ? null : await get(`/api/settings/skills/${name}`))
    : skillList()));
}

async function skillList() {
  const skills = await get('/api/settings/skills');
  return h('section', {class: 'panel'}, h('h2', {text: 'Skills'}),
    h('a', {class: 'button primary', href: '#/skills/new', text: 'New skill'}),
    h('ul', {class: 'cards'}, skills.map((skill) => h('li', {class: 'card'},
      h('a', {href: `#/skills/${encodeURIComponent(skill.name)}`, text: skill.name}),
      h('p', {class: 'muted', text: skill.description || ''})))),
    skills.length ? null : h('p', {class: 'muted', text: 'No skills yet.'}));
}

function skillEditor(skill) {
  const message = h('div');
  const name = h('input', {type: 'text', name: 'name', value: skill?.name || '', readOnly: Boolean(skill), 'aria-label': 'Name'});
  const description = h('input', {type: 'text', name: 'description', value: skill?.description || '', 'aria-label': 'Description'});
  const body = h('textarea', {class: 'file-editor', name: 'body', 'aria-label': 'Instructions', value: skill?.body || ''});
  const idea = h('input', {type: 'text', name: 'prompt', placeholder: 'What should the skill do? (for drafting)',
    'aria-label': 'What the skill should do'});
  const save = async (event) => {
    event.preventDefault();
    const payload = {name: name.value.trim(), description: description.value, body: body.value};
    try {
      if (skill) await put(`/api/settings/skills/${skill.name}`, payload);
      else await post('/api/settings/skills', payload);
      toast('Skill saved.');
      location.hash = '#/skills';
    } catch (error) { replace(message, errorBox(error)); }
  };
  const draft = async () => {
    replace(message, h('p', {class: 'muted', text: 'Asking the model for a draft…'}));
    try {
      const drafted = await post('/api/settings/skills/generate',
        {name: name.value.trim(), description: description.value || null, prompt: idea.value || null});
      description.value = drafted.description;
      body.value = drafted.body;
      replace(message);
    } catch (error) { replace(message, errorBox(error)); }
  };
  const remove = async () => {
    if (!confirm(`Delete skill ${skill.name}?`)) return;
    try { await del(`/api/settings/skills/${skill.name}`); location.hash = '#/skills'; } catch (error) { replace(message, errorBox(error)); }
  };
  return h('section', {class: 'panel'}, h('p', {}, h('a', {href: '#/skills', text: '← All skills'})),
    h('h2', {text: skill ? skill.name : 'New skill'}), message,
    h('form', {class: 'settings-form', onsubmit: save},
      h('label', {text: 'Name'}, name), h('label', {text: 'Description'}, description),
      h('label', {text: 'Draft with the model'}, idea),
      h('label', {text: 'SKILL.md body'}, body),
      h('div', {class: 'form-actions'}, h('button', {class: 'primary', type: 'submit', text: 'Save'}),
        h('button', {class: 'draft', type: 'button', text: 'Draft with the model', onclick: draft}),
        skill ? h('button', {class: 'danger', type: 'button', text: 'Delete', onclick: remove}) : null)));
}

// --- instances -------------------------------------------------------------------------

export function instancesView() {
  return loading(async () => {
    const instances = await get('/api/instances');
    const message = h('div');
    const refresh = () => window.dispatchEvent(new HashChangeEvent('hashchange'));
    const act = (fn) => async () => {
      try { await fn(); refresh(); } catch (error) { replace(message, errorBox(error)); }
    };
    const nameInput = h('input', {type: 'text', placeholder: 'Name', 'aria-label': 'Instance name'});
    const create = h('form', {class: 'inline-form', onsubmit: async (event) => {
      event.preventDefault();
      try {
        const created = await post('/api/instances', {name: nameInput.value || null});
        if (created.api_key) showSecretOnce('Instance created', created.api_key, `Admin key for ${created.url || created.id}; shown only once.`);
        refresh();
      } catch (error) { replace(message, errorBox(error)); }
    }}, nameInput, h('button', {class: 'primary', type: 'submit', text: 'Create instance'}));
    return h('section', {class: 'panel'}, h('h2', {text: 'Instances'}), create, message,
      h('table', {class: 'table'}, h('tbody', {}, instances.map((inst) => h('tr', {},
        h('td', {text: inst.name || inst.id}), h('td', {}, h('span', {class: `badge status-${inst.status}`, text: inst.status})),
        h('td', {class: 'muted', text: inst.health ? `${inst.health.cpu_percent}% cpu · ${inst.health.memory_mb} MB` : 'no health yet'}),
        h('td', {},
          h('button', {type: 'button', text: 'Pause', onclick: act(() => post(`/api/instances/${inst.id}/pause`))}),
          h('button', {type: 'button', text: 'Restart', onclick: act(() => post(`/api/instances/${inst.id}/restart`))}),
          h('button', {type: 'button', class: 'danger', text: 'Delete',
            onclick: act(async () => { if (confirm('Delete this instance?')) await del(`/api/instances/${inst.id}`); })})))))));
  });
}
