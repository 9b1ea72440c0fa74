// The sessions sidebar: newest first, unread markers, origin badges (main, telegram, scheduler),
// new chat and navigation.

import {get, session as auth} from './api.js';
import {h, replace, formatTime} from './dom.js';

const SESSION_LIMIT = 100;

export class Sidebar {
  constructor({onNavigate}) {
    this.onNavigate = onNavigate;
    this.list = h('ul', {class: 'session-list', 'aria-label': 'Sessions'});
    this.nav = h('nav', {class: 'nav'});
    this.root = h('aside', {class: 'sidebar', id: 'sidebar'},
      h('button', {class: 'primary new-chat', type: 'button', text: '+ New chat',
        onclick: () => this.go('#/chat')}),
      this.nav,
      h('h3', {class: 'sidebar-title', text: 'Sessions'}),
      this.list);
    this.activeId = null;
  }

  go(hash) {
    location.hash = hash;
    this.onNavigate();
  }

  drawNav(current) {
    const links = [['#/chat', 'Chat'], ['#/memory', 'Memory'], ['#/cron', 'Scheduled jobs'], ['#/usage', 'Usage']];
    if (auth.isAdmin) {
      links.push(['#/settings', 'Settings'], ['#/users', 'Users & keys'], ['#/skills', 'Skills'],
        ['#/instances', 'Instances']);
    }
    replace(this.nav, links.map(([hash, label]) => h('a', {href: hash, text: label,
      class: current.startsWith(hash) ? 'active' : null, onclick: () => this.onNavigate()})));
  }

  async refresh() {
    let sessions;
    try {
      sessions = await get(`/api/sessions?limit=${SESSION_LIMIT}`);
    } catch (error) {
      replace(this.list, h('li', {class: 'error-box', text: error.message}));
      return;
    }
    replace(this.list, sessions.map((item) => this.item(item)));
  }

  item(item) {
    const title = item.title && item.title.trim() ? item.title : 'Untitled';
    const unread = !item.is_read && item.id !== this.activeId;
    return h('li', {class: `session${item.id === this.activeId ? ' active' : ''}${unread ? ' unread' : ''}`,
      dataset: {sessionId: item.id}},
    h('a', {href: `#/chat/${item.id}`, onclick: () => this.onNavigate()},
      unread ? h('span', {class: 'unread-dot', title: 'Unread', 'aria-label': 'Unread'}) : null,
      h('span', {class: 'session-title', text: title}),
      h('span', {class: `badge channel-${item.origin}`, text: item.origin}),
      h('time', {class: 'muted', datetime: item.last_message_at, text: formatTime(item.last_message_at)})));
  }

  setActive(sessionId) {
    this.activeId = sessionId;
    for (const li of this.list.children) {
      const active = li.dataset.sessionId === sessionId;
      li.classList.toggle('active', active);
      if (active) { li.classList.remove('unread'); li.querySelector('.unread-dot')?.remove(); }
    }
  }
}
