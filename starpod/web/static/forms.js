// A settings form from a field list: loads values, saves them, shows server errors by field.

import {ApiError} from './api.js';
import {h} from './dom.js';

function readPath(object, path) {
  return path.split('.').reduce((value, key) => (value == null ? undefined : value[key]), object);
}

function writePath(object, path, value) {
  const keys = path.split('.');
  let target = object;
  for (const key of keys.slice(0, -1)) target = target[key] = target[key] || {};
  target[keys[keys.length - 1]] = value;
}

function control(field) {
  const id = `field-${field.name.replace(/\W/g, '-')}`;
  if (field.type === 'checkbox') return h('input', {type: 'checkbox', id, name: field.name});
  if (field.type === 'select') {
    return h('select', {id, name: field.name}, field.options.map((option) => {
      const [value, label] = Array.isArray(option) ? option : [option, option === '' ? '(not set)' : option];
      return h('option', {value, text: label});
    }));
  }
  if (field.type === 'lines' || field.type === 'textarea') return h('textarea', {id, name: field.name, rows: 5});
  const attrs = {id, name: field.name, type: field.type === 'text' ? 'text' : 'number', placeholder: field.placeholder};
  if (field.type === 'float') attrs.step = 'any';
  if (field.list) attrs.list = field.list;
  return h('input', attrs);
}

function setValue(input, field, value) {
  if (field.type === 'checkbox') input.checked = Boolean(value);
  else if (field.type === 'lines') input.value = (value || []).join('\n');
  else input.value = value ?? '';
}

function getValue(input, field) {
  if (field.type === 'checkbox') return input.checked;
  if (field.type === 'lines') return input.value.split('\n').map((line) => line.trim()).filter(Boolean);
  const raw = input.value.trim();
  if (raw === '') return field.nullable ? null : raw;
  if (field.type === 'number') return Number.isInteger(Number(raw)) ? Number(raw) : raw;
  if (field.type === 'float') return Number.isNaN(Number(raw)) ? raw : Number(raw);
  return raw;
}

/** A form screen: `load()` gives the values, `save(values)` stores them (throws ApiError).
 * Select options are values or [value, label] pairs; a form without `title` has no heading. */
export function settingsForm({title, fields, load, save, extra = null}) {
  const status = h('p', {class: 'form-status', role: 'status'});
  const rows = fields.map((field) => {
    const input = control(field);
    const error = h('div', {class: 'field-error', role: 'alert'});
    const label = h('label', {for: input.id, text: field.label});
    const row = h('div', {class: `field ${field.type}`, dataset: {field: field.name}}, label, input,
      field.help ? h('small', {class: 'muted', text: field.help}) : null, error);
    return {field, input, error, row};
  });
  const form = h('form', {class: 'settings-form', novalidate: true, onsubmit: async (event) => {
    event.preventDefault();
    for (const {row, error} of rows) { error.textContent = ''; row.classList.remove('invalid'); }
    status.className = 'form-status';
    status.textContent = 'Saving…';
    const values = {};
    for (const {field, input} of rows) writePath(values, field.name, getValue(input, field));
    try {
      await save(values);
      status.textContent = 'Saved.';
      status.classList.add('ok');
    } catch (error) {
      showErrors(rows, status, error);
    }
  }}, rows.map((r) => r.row), h('div', {class: 'form-actions'},
    h('button', {class: 'primary', type: 'submit', text: 'Save'}), status));
  const root = h('section', {class: 'panel'}, title ? h('h2', {text: title}) : null, extra, form);
  load().then((values) => {
    for (const {field, input} of rows) setValue(input, field, readPath(values, field.name));
    form.dispatchEvent(new Event('change'));  // listeners of the form see the loaded values
  }, (error) => { status.textContent = error.message; status.classList.add('error'); });
  return root;
}

function showErrors(rows, status, error) {
  status.classList.add('error');
  status.textContent = error.message;
  if (!(error instanceof ApiError)) return;
  let first = null;
  for (const [name, messages] of Object.entries(error.fields)) {
    const found = rows.find((r) => r.field.name === name);
    if (!found) continue;
    found.error.textContent = messages.join(' ');
    found.row.classList.add('invalid');
    first = first || found;
  }
  if (first) first.input.focus();
}

/** A node telling what went wrong, with the server's per-field messages. */
export function errorBox(error) {
  return h('div', {class: 'error-box', role: 'alert'}, error.message,
    Object.entries(error.fields || {}).map(([name, messages]) =>
      h('div', {class: 'field-error', text: `${name}: ${messages.join(' ')}`})));
}
