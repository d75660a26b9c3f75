// The Kangaroo playground: chat with the server's models, the answer streamed token by token.
// Streams are read with fetch and a stream reader (EventSource cannot POST). They are resumable
// (X-Resumable): when the connection drops mid-answer, the page asks for the rest after the
// last event it saw, and the answer completes without a second generation. Model output and
// server messages are only ever set as text (textContent, Text nodes), never parsed as HTML.
"use strict";

const KEY_STORAGE = "kangaroo-api-key"; // sessionStorage: gone with the tab, never in the URL
const RETRY_MS = 2000;
const RESUME_MS = [200, 400, 800, 1000]; // waits before each try to resume a dropped answer

const byId = (id) => document.getElementById(id);
const ui = {
  status: byId("server-status"),
  settings: byId("settings"),
  model: byId("model"),
  refreshModels: byId("refresh-models"),
  system: byId("system"),
  temperature: byId("temperature"),
  maxTokens: byId("max-tokens"),
  keyLabel: byId("api-key-label"),
  key: byId("api-key"),
  newChat: byId("new-chat"),
  conversation: byId("conversation"),
  composer: byId("composer"),
  prompt: byId("prompt"),
  send: byId("send"),
  stop: byId("stop"),
};

let history = []; // the turns sent with every request: {role, content}
let running = null; // the AbortController of the answer being streamed
let retry = null; // the timer of the next /v1/models attempt

/** An error the server answered in OpenAI's envelope: {"error": {message, type, code}}. */
class ApiError extends Error {
  constructor(status, error) {
    super(error.message || "The server gave no message.");
    this.status = status;
    this.code = error.code || error.type || null;
  }

  describe() {
    const what = [this.status, this.code].filter((part) => part !== null).join(" ");
    return what ? `${what}: ${this.message}` : this.message;
  }
}

/** The ApiError of a response that is not OK, also when its body is not JSON. */
async function responseError(response) {
  const text = await response.text();
  try {
    const { error } = JSON.parse(text);
    if (typeof error === "string") return new ApiError(response.status, { message: error });
    if (error) return new ApiError(response.status, error);
  } catch {
    // Not JSON (a proxy's page, say): show the start of the body as it is.
  }
  return new ApiError(response.status, { message: text.slice(0, 300) || response.statusText });
}

function headers() {
  const key = ui.key.value.trim();
  const found = { "Content-Type": "application/json" };
  if (key) found.Authorization = `Bearer ${key}`;
  return found;
}

function setStatus(text, isError = false) {
  ui.status.textContent = text;
  ui.status.classList.toggle("error", isError);
}

/** Fill the model picker from /v1/models; retry while the engine starts or the server is down. */
async function loadModels() {
  clearTimeout(retry); // one attempt at a time, also when the key changes meanwhile
  let response;
  try {
    response = await fetch("/v1/models", { headers: headers() });
  } catch (error) {
    setStatus(`Cannot reach the server (${error.message}); retrying…`, true);
    retry = setTimeout(loadModels, RETRY_MS);
    return;
  }
  if (response.ok) {
    fillModels((await response.json()).data);
    return;
  }
  const error = await responseError(response);
  if (response.status === 401) {
    askForKey(error);
  } else if (response.status === 503) {
    setStatus("The model is loading; this page will fill in when it is ready…");
    retry = setTimeout(loadModels, RETRY_MS);
  } else {
    setStatus(`Cannot list the models: ${error.describe()}`, true);
  }
}

function fillModels(cards) {
  const chosen = ui.model.value;
  ui.model.replaceChildren(...cards.map(modelOption));
  if (cards.some((card) => card.id === chosen)) ui.model.value = chosen;
  ui.keyLabel.classList.remove("needed");
  const adapters = cards.length - 1;
  setStatus(`Serving ${cards[0].id}` + (adapters ? ` and ${adapters} adapter(s)` : ""));
}

function modelOption(card) {
  const option = document.createElement("option");
  option.value = card.id;
  option.textContent = card.parent ? `${card.id} (adapter of ${card.parent})` : card.id;
  return option;
}

/** The server refused us for want of a key: say so and put the key field in front. */
function askForKey(error) {
  ui.settings.open = true;
  ui.keyLabel.classList.add("needed");
  setStatus(`This server needs an API key. ${error.describe()}`, true);
  ui.key.focus();
}

function saveKey() {
  const key = ui.key.value.trim();
  if (key) sessionStorage.setItem(KEY_STORAGE, key);
  else sessionStorage.removeItem(KEY_STORAGE);
  loadModels();
}

/** One turn in the conversation: its element, the Text node the answer grows in, its stats. */
function addTurn(role, content) {
  const item = document.createElement("li");
  item.className = `turn ${role}`;
  const label = document.createElement("span");
  label.className = "role";
  label.textContent = role === "user" ? "You" : ui.model.value || "Assistant";
  const body = document.createElement("p");
  body.className = "content";
  const text = document.createTextNode(content);
  body.append(text);
  const stats = document.createElement("p");
  stats.className = "stats";
  const error = document.createElement("p");
  error.className = "error";
  error.setAttribute("role", "alert");
  error.hidden = true;
  item.append(label, body, error, stats);
  ui.conversation.append(item);
  scrollToEnd();
  return { item, text, stats, error };
}

function scrollToEnd() {
  ui.conversation.scrollTop = ui.conversation.scrollHeight;
}

/** Streamed text goes into its Text node once per animation frame: one layout per frame, not
 * one per token, so that long answers do not tie up the page. */
class FrameWriter {
  constructor(node) {
    this.node = node;
    this.pending = "";
    this.frame = null;
  }

  add(text) {
    this.pending += text;
    this.frame ??= requestAnimationFrame(() => this.flush());
  }

  flush() {
    cancelAnimationFrame(this.frame);
    this.frame = null;
    if (!this.pending) return;
    const list = ui.conversation;
    const follow = list.scrollHeight - list.scrollTop - list.clientHeight < 40; // reader at end
    this.node.appendData(this.pending);
    this.pending = "";
    if (follow) scrollToEnd();
  }
}

function requestBody(messages) {
  const body = {
    model: ui.model.value,
    messages,
    stream: true,
    stream_options: { include_usage: true },
  };
  // Empty fields are left out, so the server's defaults apply (0 is a value, not "empty").
  if (ui.temperature.value !== "") body.temperature = Number(ui.temperature.value);
  if (ui.maxTokens.value !== "") body.max_tokens = Number(ui.maxTokens.value);
  return body;
}

/** The events of an SSE body, {id, data}, one per event; comments (heartbeats) are skipped. */
async function* sseEvents(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let data = [];
  let id = null;
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      const lines = buffer.split(/\r?\n/);
      buffer = lines.pop(); // an unfinished line waits for the next read
      for (const line of lines) {
        if (line === "" && data.length) {
          yield { id, data: data.join("\n") };
          data = [];
        } else if (line.startsWith("data:")) {
          data.push(line.slice(5).replace(/^ /, ""));
        } else if (line.startsWith("id:")) {
          id = line.slice(3).trim();
        }
      }
    }
  } finally {
    reader.cancel().catch(() => {}); // after [DONE] or an error: let go of the connection
  }
}

/** Read the stream into the answer's text; fill in finish reason and usage. Whether it came
 * to its end ([DONE]); false when the connection ended before it. */
async function readAnswer(response, answer) {
  try {
    for await (const event of sseEvents(response.body)) {
      if (event.id !== null) answer.lastEventId = Number(event.id);
      if (event.data === "[DONE]") return true;
      readChunk(JSON.parse(event.data), answer);
    }
    return false;
  } finally {
    answer.writer.flush(); // what arrived before the end, the Stop or an error stays
  }
}

/** Read the answer to its end; when the connection drops, wait a little and ask the server
 * for the events after the last one seen, as many times as it takes (the Stop ends it; a
 * server that no longer holds the stream answers 404, shown as the error). */
async function follow(response, answer, controller) {
  for (let attempt = 0; ; attempt += 1) {
    try {
      if (response && (await readAnswer(response, answer))) return;
    } catch (error) {
      if (!dropped(error, controller)) throw error;
    }
    if (!answer.streamId) throw new Error("The connection dropped.");
    await pause(RESUME_MS[Math.min(attempt, RESUME_MS.length - 1)], controller.signal);
    response = null;
    try {
      const after = answer.lastEventId ?? -1;
      response = await fetch(`/v1/chat/completions/${answer.streamId}/stream`, {
        headers: { ...headers(), "Last-Event-ID": String(after) },
        signal: controller.signal,
      });
      if (!response.ok) throw await responseError(response);
      answer.resumes += 1;
    } catch (error) {
      if (!dropped(error, controller)) throw error;
    }
  }
}

/** Whether `error` is the network failing (worth resuming), not a Stop or a server answer. */
function dropped(error, controller) {
  return !controller.signal.aborted && error instanceof TypeError;
}

function pause(ms, signal) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => {
      clearTimeout(timer);
      reject(signal.reason);
    });
  });
}

function readChunk(chunk, answer) {
  // An error after the headers were sent arrives as an event: {"error": {...}}, then [DONE].
  if (chunk.error) throw new ApiError(null, chunk.error);
  if (chunk.usage) answer.usage = chunk.usage;
  for (const choice of chunk.choices || []) {
    const content = choice.delta && choice.delta.content;
    if (content) {
      answer.firstTokenAt ??= performance.now();
      answer.writer.add(content);
    }
    if (choice.finish_reason) answer.finish = choice.finish_reason;
  }
}

function stat(name, value) {
  const span = document.createElement("span");
  span.dataset.stat = name;
  span.textContent = value;
  return span;
}

/** Time to first token, token counts, tokens/s after the first token, finish reason. */
function showStats(answer) {
  const parts = [];
  if (answer.firstTokenAt !== undefined) {
    const ttft = answer.firstTokenAt - answer.startedAt;
    parts.push(stat("ttft", `first token ${Math.round(ttft)} ms`));
  }
  const usage = answer.usage;
  if (usage) {
    parts.push(stat("completion-tokens", `${usage.completion_tokens} tokens`));
    const decodeS = (answer.endedAt - answer.firstTokenAt) / 1000;
    if (usage.completion_tokens > 1 && decodeS > 0) {
      const speed = (usage.completion_tokens - 1) / decodeS;
      parts.push(stat("speed", `${speed.toFixed(1)} tokens/s`));
    }
    parts.push(stat("prompt-tokens", `prompt ${usage.prompt_tokens} tokens`));
  }
  if (answer.resumes) parts.push(stat("resumed", `resumed ${answer.resumes}×`));
  parts.push(stat("finish", answer.finish || "none"));
  answer.view.stats.replaceChildren(...parts);
}

function showError(view, error) {
  view.error.textContent =
    error instanceof ApiError ? `Error ${error.describe()}` : `Error: ${error.message}`;
  view.error.hidden = false;
  view.item.classList.add("failed");
}

function setRunning(controller) {
  running = controller;
  ui.send.disabled = controller !== null;
  ui.stop.disabled = controller === null;
}

/** Send the prompt with the conversation so far and stream the answer into a new turn. */
async function send(event) {
  event.preventDefault();
  const prompt = ui.prompt.value;
  if (running || !prompt.trim()) return;
  const system = ui.system.value.trim();
  const turn = { role: "user", content: prompt };
  const past = history; // "New chat" during the answer starts a new list; this turn stays here
  const messages = [...(system ? [{ role: "system", content: system }] : []), ...past, turn];
  const body = requestBody(messages);
  ui.prompt.value = "";
  addTurn("user", prompt);
  const view = addTurn("assistant", "");
  const writer = new FrameWriter(view.text);
  const answer = { view, writer, startedAt: performance.now(), resumes: 0, streamId: null };
  const controller = new AbortController();
  setRunning(controller);
  try {
    const response = await fetch("/v1/chat/completions", {
      method: "POST",
      headers: { ...headers(), "X-Resumable": "true" },
      body: JSON.stringify(body),
      signal: controller.signal,
    });
    if (!response.ok) throw await responseError(response);
    answer.streamId = controller.streamId = response.headers.get("X-Resumable-Id");
    await follow(response, answer, controller);
  } catch (error) {
    if (controller.signal.aborted) answer.finish = "stopped";
    else fail(answer, error, prompt);
  } finally {
    answer.endedAt = performance.now();
    setRunning(null);
  }
  const content = answer.view.text.data;
  if (content) past.push(turn, { role: "assistant", content });
  showStats(answer);
}

function fail(answer, error, prompt) {
  answer.finish = "error";
  showError(answer.view, error);
  if (error.status === 401) askForKey(error);
  // Nothing came back: give the prompt back, to send again once the cause is fixed.
  if (!answer.view.text.data && !ui.prompt.value) ui.prompt.value = prompt;
}

function stop() {
  if (!running) return;
  running.abort(); // closes the connection; a resumable stream goes on until it is cancelled:
  if (running.streamId) {
    const cancel = `/v1/chat/completions/${running.streamId}/cancel`;
    fetch(cancel, { method: "POST", headers: headers() }).catch(() => {});
  }
}

function newChat() {
  stop();
  history = [];
  ui.conversation.replaceChildren();
}

function sendOnEnter(event) {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    ui.composer.requestSubmit();
  }
}

function start() {
  ui.key.value = sessionStorage.getItem(KEY_STORAGE) || "";
  // On a phone the settings start folded, leaving the screen to the conversation.
  if (window.matchMedia("(max-width: 40rem)").matches) ui.settings.open = false;
  ui.composer.addEventListener("submit", send);
  ui.prompt.addEventListener("keydown", sendOnEnter);
  ui.stop.addEventListener("click", stop);
  ui.newChat.addEventListener("click", newChat);
  ui.refreshModels.addEventListener("click", loadModels);
  ui.key.addEventListener("change", saveKey);
  loadModels();
}

start();
