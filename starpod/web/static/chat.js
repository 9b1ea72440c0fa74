// The chat screen: history, streamed replies with tool cards, attachments, resume after reloads,
// and a Stop button beside Send while a reply streams.

import {get, post, renderMarkdown} from './api.js';
import {h, replace, formatTime} from './dom.js';

const RUN_STORAGE = 'starpod.run';
const IMAGE_TYPES = new Set(['image/png', 'image/jpeg', 'image/gif', 'image/webp']);
const STOPPED_PREFIX = 'Run stopped:';  // the stream_end error of a reply stopped on request

function uuid() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[6] = (bytes[6] & 0x0f) | 0x40;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = [...bytes].map((b) => b.toString(16).padStart(2, '0')).join('');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/** The run this tab follows, kept in sessionStorage so a reload continues where it stopped. */
export function storedRun() {
  try { return JSON.parse(sessionStorage.getItem(RUN_STORAGE)); } catch { return null; }
}

function readAsBase64(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result).split(',', 2)[1] || '');
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

function usageText(end) {
  const turns = `${end.num_turns} turn${end.num_turns === 1 ? '' : 's'}`;
  const tokens = `${end.input_tokens} in / ${end.output_tokens} out tokens`;
  return `${turns} · ${tokens} · $${Number(end.cost_usd || 0).toFixed(4)}`;
}

function prettyJson(value) {
  if (typeof value === 'string') return value;
  return JSON.stringify(value, null, 2);
}

/** Put the server's sanitized HTML (nh3) into `el`; the CSP forbids inline scripts anyway. */
function showHtml(el, html) {
  if (typeof html !== 'string') return;  // keep the plain text
  el.innerHTML = html;
  el.classList.remove('plain');
}

/** Show `text` as plain text until its rendered HTML arrives from the server. */
async function fillMarkdown(el, text) {
  el.textContent = text;
  el.classList.add('plain');
  showHtml(el, await renderMarkdown(text));
}

export class ChatView {
  constructor(socket, {onSessionsChanged, welcome}) {
    this.socket = socket;
    this.onSessionsChanged = onSessionsChanged;
    this.welcome = welcome;
    this.sessionId = null;
    this.channelKey = uuid();
    this.run = null;        // {sessionId, seq, parts, streaming, waiting}
    this.reply = null;      // DOM of the reply being streamed
    this.resumeSent = false;
    this.files = [];
    this.build();
    socket.addEventListener('frame', (event) => this.onFrame(event.detail));
    socket.addEventListener('open', () => this.resumeIfRunning());
    socket.addEventListener('state', (event) => this.onSocketState(event.detail.state));
  }

  build() {
    this.log = h('div', {class: 'log', role: 'log', 'aria-live': 'polite'});
    this.input = h('textarea', {class: 'composer-input', rows: 1, placeholder: 'Message the agent…',
      'aria-label': 'Message', onkeydown: (event) => this.onKey(event)});
    this.fileInput = h('input', {type: 'file', multiple: true, class: 'visually-hidden',
      onchange: () => { this.addFiles(this.fileInput.files); this.fileInput.value = ''; }});
    this.attachmentsBar = h('div', {class: 'attachments'});
    this.notice = h('div', {class: 'composer-notice', hidden: true});
    this.sendButton = h('button', {class: 'primary send', type: 'submit', text: 'Send'});
    this.stopButton = h('button', {class: 'danger stop', type: 'button', text: 'Stop', hidden: true,
      title: 'Stop the reply', onclick: () => this.stop()});
    this.form = h('form', {class: 'composer', onsubmit: (event) => { event.preventDefault(); this.send(); }},
      this.attachmentsBar, this.notice,
      h('div', {class: 'composer-row'},
        h('button', {class: 'attach', type: 'button', title: 'Attach files', 'aria-label': 'Attach files',
          text: 'Attach', onclick: () => this.fileInput.click()}),
        this.fileInput, this.input, this.stopButton, this.sendButton));
    this.root = h('section', {class: 'chat', ondragover: (e) => e.preventDefault(),
      ondrop: (e) => { e.preventDefault(); this.addFiles(e.dataTransfer.files); }},
    this.log, this.form);
  }

  // --- opening conversations ---------------------------------------------------------

  showNew() {
    this.sessionId = null;
    this.channelKey = uuid();
    this.setReadOnly(null);
    this.drawStop();
    replace(this.log, this.welcomeBlock());
    this.input.focus();
  }

  welcomeBlock() {
    const {greeting, prompts, agentName} = this.welcome();
    return h('div', {class: 'welcome'},
      h('h2', {text: greeting || `Hi, I'm ${agentName}.`}),
      h('p', {class: 'muted', text: `Ask ${agentName} anything.`}),
      h('div', {class: 'chips'}, (prompts || []).map((prompt) =>
        h('button', {class: 'chip', type: 'button', text: prompt,
          onclick: () => { this.input.value = prompt; this.send(); }}))));
  }

  async open(sessionId) {
    const opening = sessionId;
    this.sessionId = sessionId;
    replace(this.log, h('p', {class: 'muted', text: 'Loading…'}));
    let meta;
    let messages;
    try {
      [meta, messages] = await Promise.all([get(`/api/sessions/${sessionId}`),
        get(`/api/sessions/${sessionId}/messages?render=1`)]);
    } catch (error) {
      replace(this.log, h('div', {class: 'error-box', text: error.message}));
      return;
    }
    if (this.sessionId !== opening) return;
    this.channelKey = meta.channel_session_key || uuid();
    this.setReadOnly(meta.channel === 'main' ? null : meta.channel);
    const live = this.run?.sessionId === sessionId && this.run.streaming;
    const saved = live ? null : storedRun();
    const restoring = saved?.sessionId === sessionId;
    if (live || restoring) messages = trimRunning(messages);
    replace(this.log);
    this.renderHistory(messages);
    if (restoring) {
      this.run = {...saved, streaming: true, waiting: false};
      this.resumeSent = false;
    }
    if (live || restoring) {
      this.reply = this.startReply();
      for (const part of this.run.parts) this.drawPart(part);
      this.resumeIfRunning();
    }
    this.drawStop();
    if (!meta.is_read) {
      post(`/api/sessions/${sessionId}/read`, {is_read: true}).then(() => this.onSessionsChanged(), () => {});
    }
    this.scrollDown();
  }

  setReadOnly(channel) {
    const readOnly = Boolean(channel);
    this.input.disabled = readOnly;
    this.sendButton.disabled = readOnly;
    this.notice.hidden = !readOnly;
    this.notice.textContent = readOnly ? `This ${channel} conversation is read-only here.` : '';
  }

  renderHistory(messages) {
    let reply = null;
    for (const message of messages) {
      if (message.role === 'user') {
        reply = null;
        this.log.append(userBubble(message.content, [], message.timestamp));
        continue;
      }
      reply = reply || this.startReply(true, false);
      if (message.role === 'assistant') {
        const part = {kind: 'text', text: message.content};
        this.drawPart(part, reply);
        showHtml(part.el, message.html);
      } else {
        const data = parseJson(message.content);
        if (message.role === 'tool_use') this.drawPart({kind: 'tool', id: data.id, name: data.name, input: data.input}, reply);
        else this.updateTool(reply, data.tool_use_id, data.content, data.is_error);
      }
    }
  }

  // --- sending -----------------------------------------------------------------------

  onKey(event) {
    if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      this.send();
    }
  }

  addFiles(fileList) {
    for (const file of fileList) {
      const preview = IMAGE_TYPES.has(file.type) ? URL.createObjectURL(file) : null;
      this.files.push({file, preview});
    }
    this.drawAttachments();
  }

  drawAttachments() {
    replace(this.attachmentsBar, this.files.map((item, index) =>
      h('span', {class: 'attachment'},
        item.preview ? h('img', {src: item.preview, alt: item.file.name, class: 'thumb'}) : null,
        h('span', {class: 'file-name', text: item.file.name}),
        h('button', {type: 'button', class: 'icon', 'aria-label': `Remove ${item.file.name}`, text: '×',
          onclick: () => { this.files.splice(index, 1); this.drawAttachments(); }}))));
  }

  async send() {
    const text = this.input.value.trim();
    if (!text || this.input.disabled) return;
    if (!this.socket.isOpen) {
      this.showError('Not connected to the server yet; your message is still in the box.');
      return;
    }
    const followup = Boolean(this.run?.streaming || this.run?.waiting);
    const files = followup ? [] : this.files.splice(0);
    const attachments = await Promise.all(files.map(async ({file}) => ({
      file_name: file.name, mime_type: file.type || 'application/octet-stream', data: await readAsBase64(file)})));
    const frame = {type: 'message', text, channel_id: 'main', channel_session_key: this.channelKey, attachments};
    if (!this.socket.send(frame)) {
      this.showError('Connection lost; your message was not sent.');
      return;
    }
    this.log.querySelector('.welcome')?.remove();
    this.input.value = '';
    this.drawAttachments();
    this.log.append(userBubble(text, files, new Date().toISOString(), followup));
    if (!followup) this.run = {sessionId: this.sessionId, seq: 0, parts: [], streaming: false, waiting: true};
    this.drawStop();
    this.scrollDown();
  }

  /** Stop the reply this socket follows (it started or resumed it); its stream_end (stopped)
   *  brings the view back to ready. */
  stop() {
    if (!this.socket.send({type: 'stop'})) {
      this.showError('Connection lost; the reply could not be stopped.');
      return;
    }
    this.run.stopping = true;
    this.drawStop();
  }

  /** Stop shows while the reply of the conversation on screen is on its way. */
  drawStop() {
    const run = this.run;
    const active = Boolean(run && (run.streaming || run.waiting) && run.sessionId == this.sessionId);
    this.stopButton.hidden = !active;
    this.stopButton.disabled = Boolean(run?.stopping);
    this.stopButton.textContent = run?.stopping ? 'Stopping…' : 'Stop';
  }

  // --- frames ------------------------------------------------------------------------

  onFrame(frame) {
    if (frame.type === 'notification') return;
    if (typeof frame.seq === 'number' && this.run) {
      if (frame.seq <= this.run.seq) return;  // already shown (a resume replays from after_seq)
      this.run.seq = frame.seq;
    }
    const handler = {
      stream_start: () => this.onStart(frame),
      text_delta: () => this.onDelta(frame.text),
      tool_use: () => this.addPart({kind: 'tool', id: frame.id, name: frame.name, input: frame.input}),
      tool_result: () => this.onToolResult(frame),
      stream_end: () => this.onEnd(frame),
      error: () => this.onError(frame.message),
    }[frame.type];
    if (handler) handler();
    if (this.run?.streaming) this.persist();
    this.drawStop();
  }

  onStart(frame) {
    const startedHere = this.run?.sessionId == null;
    this.run = {seq: 0, ...this.run, sessionId: frame.session_id, parts: [], streaming: true, waiting: false};
    if (startedHere && this.sessionId === null) {
      this.sessionId = frame.session_id;
      history.replaceState(null, '', `#/chat/${frame.session_id}`);
    }
    this.reply = this.startReply(this.sessionId === frame.session_id);
    this.onSessionsChanged();
  }

  onDelta(text) {
    const parts = this.run.parts;
    const last = parts[parts.length - 1];
    if (last?.kind === 'text') {
      last.text += text;
      last.el.textContent = last.text;
    } else {
      this.addPart({kind: 'text', text});
    }
    this.scrollDown();
  }

  addPart(part) {
    this.run.parts.push(part);
    this.drawPart(part);
    this.scrollDown();
  }

  onToolResult(frame) {
    const part = this.run.parts.find((p) => p.kind === 'tool' && p.id === frame.tool_use_id);
    if (part) Object.assign(part, {content: frame.content, is_error: frame.is_error, done: true});
    this.updateTool(this.reply, frame.tool_use_id, frame.content, frame.is_error);
  }

  onEnd(frame) {
    const reply = this.reply;
    for (const part of this.run.parts) if (part.kind === 'text' && part.el) fillMarkdown(part.el, part.text);
    for (const message of frame.errors || []) {
      const stopped = message.startsWith(STOPPED_PREFIX);
      reply.body.append(h('div', {class: stopped ? 'stopped-note muted' : 'error-box', text: stopped ? 'Stopped.' : message}));
    }
    reply.footer.textContent = usageText(frame);
    reply.footer.hidden = false;
    reply.bubble.classList.remove('streaming');
    this.run.streaming = false;
    this.run.stopping = false;
    sessionStorage.removeItem(RUN_STORAGE);
    this.onSessionsChanged();
  }

  onError(message) {
    if (message.startsWith('No run to resume')) {
      sessionStorage.removeItem(RUN_STORAGE);
      const sessionId = this.run?.sessionId;
      this.run = null;
      if (sessionId && sessionId === this.sessionId) this.open(sessionId);
      return;
    }
    if (this.run?.waiting) this.run = null;
    this.showError(message);
  }

  onSocketState(state) {
    if (state === 'online') return;
    this.resumeSent = false;
    if (this.run?.waiting && state === 'reconnecting') {
      this.run = null;
      this.showError('The connection dropped before the reply started; please send again.');
    }
  }

  resumeIfRunning() {
    const run = this.run;
    if (!run?.streaming || !run.sessionId || this.resumeSent || !this.socket.isOpen) return;
    this.resumeSent = this.socket.send({type: 'resume', session_id: run.sessionId, after_seq: run.seq});
  }

  persist() {
    const {sessionId, seq, parts} = this.run;
    const plain = parts.map(({el, card, ...rest}) => rest);
    sessionStorage.setItem(RUN_STORAGE, JSON.stringify({sessionId, seq, parts: plain}));
  }

  // --- drawing -----------------------------------------------------------------------

  startReply(attached = true, streaming = true) {
    const body = h('div', {class: 'bubble-body'});
    const footer = h('div', {class: 'usage-line', hidden: true});
    const bubble = h('article', {class: `message assistant${streaming ? ' streaming' : ''}`}, body, footer);
    if (attached) this.log.append(bubble);
    return {bubble, body, footer, cards: new Map()};
  }

  drawPart(part, reply = this.reply) {
    if (part.kind === 'text') {
      part.el = h('div', {class: 'text plain', text: part.text});
      reply.body.append(part.el);
      return;
    }
    const status = h('span', {class: 'tool-status'});
    const result = h('pre', {class: 'tool-result'});
    const card = h('details', {class: 'tool-card', dataset: {toolId: part.id}},
      h('summary', {}, h('span', {class: 'tool-name', text: part.name}), status),
      h('div', {class: 'tool-label', text: 'Input'}), h('pre', {class: 'tool-input', text: prettyJson(part.input)}),
      h('div', {class: 'tool-label', text: 'Result'}), result);
    reply.cards.set(part.id, {card, status, result});
    reply.body.append(card);
    if (part.done) this.updateTool(reply, part.id, part.content, part.is_error);
    else status.textContent = 'running…';
  }

  updateTool(reply, toolId, content, isError) {
    const found = reply?.cards.get(toolId);
    if (!found) return;
    found.result.textContent = content;
    found.status.textContent = isError ? 'error' : 'done';
    found.card.classList.toggle('error', Boolean(isError));
  }

  showError(message) {
    this.log.append(h('div', {class: 'error-box', role: 'alert', text: message}));
    this.scrollDown();
  }

  scrollDown() {
    this.log.scrollTop = this.log.scrollHeight;
  }
}

function parseJson(text) {
  try { return JSON.parse(text); } catch { return {}; }
}

/** History without the rows of the reply still streaming (everything after the last user row). */
function trimRunning(messages) {
  let last = messages.length - 1;
  while (last >= 0 && messages[last].role !== 'user') last -= 1;
  return messages.slice(0, last + 1);
}

function userBubble(text, files, timestamp, followup = false) {
  return h('article', {class: `message user${followup ? ' followup' : ''}`},
    h('div', {class: 'text', text}),
    files.length ? h('div', {class: 'attachments'}, files.map(({file, preview}) =>
      h('span', {class: 'attachment'},
        preview ? h('img', {src: preview, alt: file.name, class: 'thumb'}) : null,
        h('span', {class: 'file-name', text: file.name})))) : null,
    h('time', {class: 'muted', datetime: timestamp, text: formatTime(timestamp)}));
}
