// Entry point: login, layout, hash routing, the socket and notification toasts.

import {get, login, logout, session as auth} from './api.js';
import {ChatView, storedRun} from './chat.js';
import {cronView} from './cron.js';
import {h, replace, toast} from './dom.js';
import {Sidebar} from './sidebar.js';
import {ChatSocket} from './socket.js';
import {adminOnly, instancesView, memoryView, settingsView, skillsView, usageView, usersView} from './views.js';

const ADMIN_SCREENS = new Set(['settings', 'users', 'skills', 'instances']);
const STATE_LABELS = {online: 'Connected', connecting: 'Connecting…', reconnecting: 'Reconnecting', offline: 'Offline'};

const app = document.getElementById('app');
const welcome = {greeting: null, prompts: [], agentName: 'Starpod'};

function loginScreen(message = '') {
  const input = h('input', {type: 'password', name: 'api_key', autocomplete: 'current-password',
    placeholder: 'sp_live_…', 'aria-label': 'API key', required: true});
  const error = h('p', {class: 'login-error', role: 'alert', text: message});
  const form = h('form', {class: 'login', onsubmit: async (event) => {
    event.preventDefault();
    error.textContent = '';
    try {
      const answer = await login(input.value.trim());
      if (answer.authenticated) start();
      else error.textContent = 'That API key was not accepted.';
    } catch {
      error.textContent = 'The server could not be reached.';
    }
  }}, h('h1', {text: 'Starpod'}), h('p', {class: 'muted', text: 'Sign in with your API key.'}),
  input, h('button', {class: 'primary', type: 'submit', text: 'Sign in'}), error);
  app.className = 'login-page';
  replace(app, form);
  input.focus();
}

/** Log in with ?token= once, then take it out of the address bar (and the history). */
async function consumeUrlToken() {
  const url = new URL(location.href);
  const token = url.searchParams.get('token');
  if (token === null) return null;
  url.searchParams.delete('token');
  history.replaceState(null, '', url.pathname + url.search + url.hash);
  return login(token);
}

async function boot() {
  try {
    const fromUrl = await consumeUrlToken();
    if (fromUrl?.authenticated) return start();
    const answer = await login(auth.key);
    if (answer.authenticated) return start();
    loginScreen(auth.key || fromUrl ? 'Your API key is no longer valid. Please sign in again.' : '');
  } catch {
    loginScreen('The server could not be reached. Reload to try again.');
  }
}

async function loadWelcome() {
  try {
    const frontend = await get('/api/settings/frontend');
    welcome.greeting = frontend.greeting;
    welcome.prompts = frontend.prompts || [];
    if (frontend.agent_name) welcome.agentName = frontend.agent_name;
  } catch { /* no frontend settings for this user: the default welcome is shown */ }
  if (auth.isAdmin && welcome.agentName === 'Starpod') {
    try { welcome.agentName = (await get('/api/settings/general')).agent_name; } catch { /* keep the default */ }
  }
}

/** A socket that cannot reconnect may have lost its key: the handshake fails alike for both. */
async function signOutIfKeyRevoked() {
  try {
    if (!(await get('/api/auth/verify')).authenticated) window.dispatchEvent(new Event('starpod:unauthorized'));
  } catch { /* server unreachable: keep reconnecting */ }
}

function start() {
  const socket = new ChatSocket(() => auth.key);
  const listening = new AbortController();  // window listeners of this signed-in session
  const signal = listening.signal;
  const signOut = (message = '') => {
    listening.abort();
    socket.close();
    logout();
    history.replaceState(null, '', location.pathname);
    loginScreen(message);
  };
  const sidebar = new Sidebar({onNavigate: () => document.body.classList.remove('drawer-open')});
  const chat = new ChatView(socket, {onSessionsChanged: () => sidebar.refresh(), welcome: () => welcome});
  const main = h('main', {class: 'main'});
  const connection = h('span', {class: 'connection', role: 'status'});
  const who = auth.user ? (auth.user.display_name || auth.user.id) : 'auth disabled';
  const header = h('header', {class: 'topbar'},
    h('button', {class: 'icon menu', type: 'button', 'aria-label': 'Menu', 'aria-controls': 'sidebar', text: '☰',
      onclick: () => document.body.classList.toggle('drawer-open')}),
    h('span', {class: 'brand', text: 'Starpod'}), connection,
    h('span', {class: 'who muted', text: who}),
    h('button', {class: 'logout', type: 'button', text: 'Sign out', onclick: () => signOut()}));
  const scrim = h('div', {class: 'scrim', onclick: () => document.body.classList.remove('drawer-open')});
  app.className = 'shell';
  replace(app, header, sidebar.root, scrim, main);

  socket.addEventListener('state', ({detail}) => {
    connection.textContent = `${STATE_LABELS[detail.state]}${detail.detail ? ` ${detail.detail}` : ''}`;
    connection.dataset.state = detail.state;
    if (detail.state === 'reconnecting') signOutIfKeyRevoked();
  });
  socket.addEventListener('frame', ({detail: frame}) => {
    if (frame.type !== 'notification') return;
    const label = `${frame.success ? '✓' : '✗'} ${frame.job_name}: ${frame.result_preview}`;
    toast(label, {kind: frame.success ? 'info' : 'error',
      onOpen: frame.session_id ? () => { location.hash = `#/chat/${frame.session_id}`; } : null});
    sidebar.refresh();
  });
  window.addEventListener('starpod:unauthorized',
    () => signOut('Your API key is no longer valid. Please sign in again.'), {signal});
  document.addEventListener('keydown', (event) => {
    if (event.key === 'Escape') document.body.classList.remove('drawer-open');
  }, {signal});

  const route = () => {
    const [screen = 'chat', arg = '', owner = ''] = location.hash.replace(/^#\/?/, '').split('/').map(decodeURIComponent);
    sidebar.drawNav(`#/${screen}`);
    sidebar.setActive(screen === 'chat' ? arg || null : null);
    if (ADMIN_SCREENS.has(screen) && !auth.isAdmin) return replace(main, adminOnly());
    const screens = {
      memory: memoryView, usage: usageView, settings: () => settingsView(arg), cron: () => cronView(arg, owner),
      users: () => usersView(arg), skills: () => skillsView(arg), instances: instancesView,
    };
    if (screens[screen]) return replace(main, screens[screen]());
    replace(main, chat.root);
    if (!arg) chat.showNew();
    else if (arg !== chat.sessionId || !chat.log.childElementCount) chat.open(arg);
  };
  window.addEventListener('hashchange', route, {signal});

  const pending = storedRun();
  if (pending?.sessionId) location.hash = `#/chat/${pending.sessionId}`;
  loadWelcome().then(route);
  sidebar.refresh();
  socket.connect();
}

boot();
