// Tiny DOM helpers: build elements without HTML strings, toasts, dialogs.

/** h('div', {class: 'x', onclick: fn, dataset: {id: 1}}, child, [children], 'text') */
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(props || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === 'class') el.className = value;
    else if (name === 'text') el.textContent = value;
    else if (name === 'dataset') Object.assign(el.dataset, value);
    else if (name.startsWith('on') && typeof value === 'function') el.addEventListener(name.slice(2), value);
    else if (name === 'value' || (name in el && typeof value !== 'string')) el[name] = value;
    else el.setAttribute(name, value === true ? '' : value);
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

export function replace(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

export function formatTime(iso) {
  if (!iso) return '';
  const date = new Date(iso);
  const sameDay = date.toDateString() === new Date().toDateString();
  return sameDay ? date.toLocaleTimeString([], {hour: '2-digit', minute: '2-digit'})
    : date.toLocaleDateString([], {month: 'short', day: 'numeric'});
}

let toastBox = null;

/** A toast in the corner; `onOpen` makes it clickable. Closes itself after `ms`. */
export function toast(message, {kind = 'info', onOpen = null, ms = 8000} = {}) {
  if (!toastBox) {
    toastBox = h('div', {class: 'toasts', role: 'status', 'aria-live': 'polite'});
    document.body.append(toastBox);
  }
  const close = () => item.remove();
  const item = h('div', {class: `toast ${kind}`},
    h('button', {class: 'toast-body', type: 'button', text: message,
      onclick: () => { close(); if (onOpen) onOpen(); }}),
    h('button', {class: 'toast-close', type: 'button', 'aria-label': 'Dismiss', text: '×', onclick: close}));
  toastBox.append(item);
  setTimeout(close, ms);
  return item;
}

/** A modal dialog (Esc closes it). Returns the <dialog>; `content` is a node or list. */
export function dialog(title, content) {
  const box = h('dialog', {class: 'dialog'},
    h('header', {}, h('h2', {text: title}),
      h('button', {class: 'icon', type: 'button', 'aria-label': 'Close', text: '×', onclick: () => box.close()})),
    h('div', {class: 'dialog-body'}, content));
  box.addEventListener('close', () => box.remove());
  document.body.append(box);
  box.showModal();
  return box;
}

/** Copy text to the clipboard, falling back to selecting it. */
export async function copyText(text, input) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    if (input) { input.select(); document.execCommand('copy'); }
    return false;
  }
}
