// The public API: X-API-Key from the browser's storage, JSON in and out, errors as ApiError.

const KEY_STORAGE = 'starpod.apiKey';

export const session = {
  key: localStorage.getItem(KEY_STORAGE),
  user: null,          // {id, display_name, role} from /api/auth/verify
  authDisabled: false,
  get isAdmin() { return this.authDisabled || this.user?.role === 'admin'; },
};

export class ApiError extends Error {
  constructor(status, body) {
    super(body?.error || `Request failed (${status})`);
    this.status = status;
    this.fields = body?.fields || {};
  }
}

export async function api(method, path, body) {
  const headers = {};
  if (session.key) headers['X-API-Key'] = session.key;
  const init = {method, headers};
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (error) {
    throw new ApiError(0, {error: `Server unreachable (${error.message})`});
  }
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = {error: text.slice(0, 200)}; }
  if (!response.ok) {
    if (response.status === 401 && session.key) window.dispatchEvent(new Event('starpod:unauthorized'));
    throw new ApiError(response.status, data);
  }
  return data;
}

export const get = (path) => api('GET', path);
export const post = (path, body = {}) => api('POST', path, body);
export const put = (path, body) => api('PUT', path, body);
export const del = (path) => api('DELETE', path);

/** Check `key` with the server; remembers it when it is good. Returns the verify answer. */
export async function login(key) {
  const answer = await fetch('/api/auth/verify', {headers: key ? {'X-API-Key': key} : {}})
    .then((r) => r.json());
  if (!answer.authenticated) return answer;
  session.authDisabled = answer.auth_disabled;
  session.user = answer.user || null;
  session.key = key || null;
  if (key) localStorage.setItem(KEY_STORAGE, key); else localStorage.removeItem(KEY_STORAGE);
  return answer;
}

export function logout() {
  session.key = null;
  session.user = null;
  localStorage.removeItem(KEY_STORAGE);
}

const renderCache = new Map();

/** Sanitized HTML for markdown `text` from the server, or null when it cannot render. */
export async function renderMarkdown(text) {
  if (renderCache.has(text)) return renderCache.get(text);
  try {
    const {html} = await post('/api/render', {text});
    if (renderCache.size > 500) renderCache.clear();
    renderCache.set(text, html);
    return html;
  } catch {
    return null;
  }
}
