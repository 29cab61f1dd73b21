// The live alert stream (Server-Sent Events) read with fetch(): EventSource cannot send
// the Authorization header. Reconnects by itself with jittered backoff, sends
// Last-Event-ID so the server replays what was missed, and treats a connection that
// says nothing (not even the server's keep-alive ping, every 15 s) as dead.

// Three missed keep-alive pings: the connection is gone even if TCP has not noticed.
const SILENCE_MS = 45_000;
const BACKOFF_MIN_MS = 500;
const BACKOFF_MAX_MS = 15_000;

export class AlertStream {
  /**
   * onEvent({type, id, data}) for each event; onState(state, info) with state
   * "connecting" | "live" | "reconnecting" | "stopped"; onOpen() is awaited after each
   * (re)connection and before any event is handed out (resynchronise there);
   * onAuthError() when the token is refused.
   */
  constructor({ url, token, onEvent, onState, onOpen, onAuthError }) {
    Object.assign(this, { url, token, onEvent, onState, onOpen, onAuthError });
    this.lastEventId = null;
    this.lastDataAt = null;
    this.attempt = 0;
    this.stopped = true;
    this.controller = null;
  }

  start() {
    if (!this.stopped) return;
    this.stopped = false;
    this._loop();
  }

  stop() {
    this.stopped = true;
    if (this.controller) this.controller.abort();
    this._setState("stopped");
  }

  _setState(state, info = {}) {
    this.state = state;
    if (this.onState) this.onState(state, info);
  }

  async _loop() {
    this._setState("connecting");
    while (!this.stopped) {
      try {
        await this._connectOnce();
      } catch (error) {
        if (this.stopped) return;
        if (error && error.auth) {
          this.stopped = true;
          this._setState("stopped");
          if (this.onAuthError) this.onAuthError();
          return;
        }
      }
      if (this.stopped) return;
      this.attempt += 1;
      const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** (this.attempt - 1));
      const wait = ceiling / 2 + Math.random() * (ceiling / 2);
      this._setState("reconnecting", { attempt: this.attempt, retryInMs: wait });
      await new Promise((resolve) => setTimeout(resolve, wait));
    }
  }

  async _connectOnce() {
    const controller = new AbortController();
    this.controller = controller;
    const headers = { Accept: "text/event-stream", Authorization: `Bearer ${this.token}` };
    if (this.lastEventId) headers["Last-Event-ID"] = this.lastEventId;
    let watchdog = null;
    const arm = () => {
      clearTimeout(watchdog);
      watchdog = setTimeout(() => controller.abort(), SILENCE_MS);
    };
    try {
      arm();
      const response = await fetch(this.url, { headers, signal: controller.signal, cache: "no-store" });
      if (response.status === 401 || response.status === 403) {
        throw Object.assign(new Error("refused"), { auth: true });
      }
      if (!response.ok || !response.body) throw new Error(`stream answered ${response.status}`);
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      // Resynchronise before handing out events: they queue in the stream meanwhile.
      if (this.onOpen) await this.onOpen();
      if (this.stopped) return;
      this.attempt = 0;
      this.lastDataAt = new Date();
      this._setState("live");
      arm();
      await this._read(reader, arm);
    } finally {
      clearTimeout(watchdog);
      controller.abort();
    }
  }

  async _read(reader, arm) {
    let buffer = "";
    let event = { type: "message", data: [], id: null };
    for (;;) {
      const { value, done } = await reader.read();
      if (done) throw new Error("stream closed");
      arm();
      this.lastDataAt = new Date();
      buffer += value;
      const lines = buffer.split(/\r\n|\r|\n/);
      buffer = lines.pop();
      for (const line of lines) {
        if (line === "") {
          if (event.data.length) this._dispatch(event);
          event = { type: "message", data: [], id: null };
          continue;
        }
        if (line.startsWith(":")) continue; // keep-alive comment
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let text = colon < 0 ? "" : line.slice(colon + 1);
        if (text.startsWith(" ")) text = text.slice(1);
        if (field === "data") event.data.push(text);
        else if (field === "event") event.type = text;
        else if (field === "id") event.id = text;
      }
      if (this.onState && this.state === "live") this.onState("live", { heartbeat: true });
    }
  }

  _dispatch(event) {
    if (event.id) this.lastEventId = event.id;
    let data;
    try {
      data = JSON.parse(event.data.join("\n"));
    } catch {
      return;
    }
    try {
      this.onEvent({ type: event.type, id: event.id, data });
    } catch (error) {
      console.error("alert event handler failed", error);
    }
  }
}
