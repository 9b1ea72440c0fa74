// The /ws connection: reconnects with backoff, reports its state, hands every frame to listeners.

const MIN_DELAY_MS = 500;
const MAX_DELAY_MS = 15000;

export class ChatSocket extends EventTarget {
  constructor(tokenProvider) {
    super();
    this.tokenProvider = tokenProvider;
    this.ws = null;
    this.state = 'offline';
    this.delay = MIN_DELAY_MS;
    this.retryTimer = null;
    this.stopped = false;
  }

  get isOpen() { return this.ws?.readyState === WebSocket.OPEN; }

  connect() {
    this.stopped = false;
    clearTimeout(this.retryTimer);
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
    const token = this.tokenProvider();
    const query = token ? `?token=${encodeURIComponent(token)}` : '';
    const ws = new WebSocket(`${scheme}://${location.host}/ws${query}`);
    this.ws = ws;
    this._setState('connecting');
    ws.addEventListener('open', () => {
      this.delay = MIN_DELAY_MS;
      this._setState('online');
      this.dispatchEvent(new Event('open'));
    });
    ws.addEventListener('message', (event) => {
      let frame;
      try { frame = JSON.parse(event.data); } catch { return; }
      this.dispatchEvent(new CustomEvent('frame', {detail: frame}));
    });
    ws.addEventListener('close', () => {
      if (this.ws !== ws) return;
      this.ws = null;
      if (!this.stopped) this._retry();
    });
  }

  _retry() {
    const seconds = Math.round(this.delay / 1000);
    this._setState('reconnecting', seconds ? `in ${seconds} s` : '');
    this.retryTimer = setTimeout(() => this.connect(), this.delay);
    this.delay = Math.min(this.delay * 2, MAX_DELAY_MS);
  }

  /** Send a frame; false when the socket is not open (the caller shows that). */
  send(frame) {
    if (!this.isOpen) return false;
    this.ws.send(JSON.stringify(frame));
    return true;
  }

  close() {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    if (this.ws) this.ws.close();
    this.ws = null;
    this._setState('offline');
  }

  _setState(state, detail = '') {
    this.state = state;
    this.dispatchEvent(new CustomEvent('state', {detail: {state, detail}}));
  }
}
