// The chat page: wires the thread, the sidebar and the composer to the WebSocket.
// Protocol: conversations/consumers.py. Every reply in progress is followed by (id, last seq): after a
// reconnect or a reload the page asks for the events after that seq, and drops any it already has.

import { ChatSocket } from "./socket.js";
import { Sidebar, conversationUrl } from "./sidebar.js";
import { Thread, formatSize } from "./thread.js";

/** @typedef {import("./types.js").ChatData} ChatData */
/** @typedef {import("./types.js").Conversation} Conversation */
/** @typedef {import("./types.js").ChatMessage} ChatMessage */
/** @typedef {import("./socket.js").ConnectionState} ConnectionState */

/**
 * @template {Element} T
 * @param {string} selector
 * @returns {T}
 */
function $(selector) {
  const element = document.querySelector(selector);
  if (!element) throw new Error(`The chat page has no ${selector}`);
  return /** @type {T} */ (element);
}

/** @type {ChatData} */
const data = JSON.parse($("#chat-data").textContent ?? "{}");

const app = /** @type {HTMLElement} */ ($("[data-chat-app]"));
const composer = /** @type {HTMLFormElement} */ ($("[data-composer]"));
const input = /** @type {HTMLTextAreaElement} */ ($("[data-composer-input]"));
const sendButton = /** @type {HTMLButtonElement} */ ($("[data-send]"));
const stopButton = /** @type {HTMLButtonElement} */ ($("[data-stop]"));
const composerError = /** @type {HTMLElement} */ ($("[data-composer-error]"));
const modelPicker = /** @type {HTMLSelectElement} */ ($("[data-model-picker]"));
const titleElement = /** @type {HTMLElement} */ ($("[data-chat-title]"));
const connection = /** @type {HTMLElement} */ ($("[data-connection]"));
const announcer = /** @type {HTMLElement} */ ($("[data-announcer]"));
const toasts = /** @type {HTMLElement} */ ($("[data-chat-toasts]"));
const settingsButton = /** @type {HTMLButtonElement} */ ($("[data-open-settings]"));
const archivedNote = /** @type {HTMLElement} */ ($("[data-archived-note]"));
const unarchiveButton = /** @type {HTMLButtonElement} */ ($("[data-unarchive]"));
const shareButton = /** @type {HTMLButtonElement} */ ($("[data-share]"));
const shortcutsDialog = /** @type {HTMLDialogElement} */ ($("[data-shortcuts-dialog]"));
const jumpButton = /** @type {HTMLButtonElement} */ ($("[data-jump-bottom]"));
const searchInput = /** @type {HTMLInputElement} */ ($("[data-conversation-search]"));
const shareDialog = /** @type {HTMLDialogElement} */ ($("[data-share-dialog]"));
const shareUrl = /** @type {HTMLInputElement} */ ($("[data-share-url]"));
const settingsDialog = /** @type {HTMLDialogElement} */ ($("[data-settings-dialog]"));
const systemPromptInput = /** @type {HTMLTextAreaElement} */ ($("[data-system-prompt]"));
const temperatureInput = /** @type {HTMLInputElement} */ ($("[data-chat-temperature]"));
const maxTokensInput = /** @type {HTMLInputElement} */ ($("[data-chat-max-tokens]"));
const projectInput = /** @type {HTMLSelectElement} */ ($("[data-chat-project]"));
const projectChip = /** @type {HTMLAnchorElement} */ ($("[data-project-chip]"));
const attachButton = /** @type {HTMLButtonElement} */ ($("[data-attach]"));
const fileInput = /** @type {HTMLInputElement} */ ($("[data-composer-file]"));
const fileChips = /** @type {HTMLElement} */ ($("[data-composer-files]"));
const deleteDialog = /** @type {HTMLDialogElement} */ ($("[data-delete-dialog]"));
const sidebarToggle = /** @type {HTMLButtonElement} */ ($("[data-sidebar-toggle]"));
const scroller = /** @type {HTMLElement} */ ($("[data-thread-scroller]"));

const narrowScreen = window.matchMedia("(max-width: 860px)");
// The server says something about a followed reply at least every 10 s (generation.waiting when quiet). A
// reply silent for longer is watched again; silent after that too, the socket is reconnected.
const STALL_MS = 25_000;
const REWATCH_AFTER_INTERRUPTION_MS = 3_000;

const state = {
  /** @type {Conversation | null} */
  conversation: data.conversation,
  /**
   * The reply this tab follows; heardAt: when the server last said anything about it (Date.now()).
   * @type {{id: string, lastSeq: number, stopping: boolean, heardAt: number, stalls: number, since: number, stateAskedAt: number} | null}
   */
  generation: null,
  /**
   * A command sent and not answered yet; stopRequested: Esc came before the reply had an id.
   * frame: the command as sent, sent again as it was after a reconnect (the server makes its turn once).
   * @type {{clientId: string, content: string, articles: HTMLElement[], frame: Record<string, unknown>, stopRequested?: boolean} | null}
   */
  pending: null,
  /** System prompt chosen before the first message of a new chat. */
  draftSystemPrompt: "",
  /** Temperature and max_tokens chosen before the first message of a new chat. @type {Record<string, number>} */
  draftParams: {},
  /** The project a new chat starts in: the page's, or the one chosen in its settings. @type {string | null} */
  draftProject: data.project,
  /** @type {Conversation | null} */
  deleting: null,
  /**
   * Files for the next message: uploading (no id yet) or uploaded (its id is sent with the message).
   * @type {{key: number, name: string, size: number, id: string | null}[]}
   */
  files: [],
};
let fileKeys = 0;

const modelNames = new Map(data.models.map((model) => [model.name, model.display_name || model.name]));
const projectNames = new Map(data.projects.map((project) => [project.id, project.name]));
const thread = new Thread(scroller, $("[data-thread]"), data.logo_url, modelNames);
const socket = new ChatSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws/chat/`, {
  onFrame: handleFrame,
  onState: showConnection,
  onOpen: () => {
    const generation = state.generation;
    if (generation) socket.send({ type: "generation.watch", id: generation.id, after: generation.lastSeq });
    if (state.pending) recoverPending(state.pending);
    sidebar.refresh(); // things may have changed while we were away
    updateComposer();
  },
  onUnauthorized: () => {
    location.assign(`${data.login_url}?next=${encodeURIComponent(location.pathname)}`);
  },
});
const sidebar = new Sidebar($("[data-sidebar]"), data.conversations, data.conversation?.id ?? null, {
  send: (frame) => socket.send(frame),
  askDelete: (conversation) => {
    state.deleting = conversation;
    $("[data-delete-title]").textContent = conversation.title || gettext("this chat");
    deleteDialog.showModal();
  },
  notify: (message) => toast(message),
  next: data.conversations_next,
});

// Server events ------------------------------------------------------------------------------------

/** @param {Record<string, any>} frame */
function handleFrame(frame) {
  switch (frame.type) {
    case "turn.created":
      return onTurnCreated(frame);
    case "conversation.branch":
      return onBranch(frame.conversation, frame.messages);
    case "generation.delta":
      return onDelta(frame.id, frame.seq, frame.text);
    case "generation.done":
      return onFinished(frame.id, frame.message, null);
    case "generation.error":
      return onFinished(frame.id, null, frame.message);
    case "message.updated":
      return thread.update(frame.message);
    case "conversation.shared":
      return onShared(frame.conversation, frame.url);
    case "generation.state":
      return thread.setWaitState(frame.id, frame.state);
    case "generation.waiting":
      return heard(frame.id);
    case "generation.interrupted":
      return onInterrupted(frame.id);
    case "conversation.updated":
      return onConversationUpdated(frame.conversation, frame.new_turn === true);
    case "conversation.deleted":
      return onConversationDeleted(frame.conversation);
    case "conversation.list":
      return sidebar.setList(frame.conversations, frame.query, frame.archived, frame.after ?? null, frame.next ?? null);
    case "error":
      return onError(frame.code, frame.message, frame.client_id ?? null);
    default:
      console.warn("Djinn: unknown event", frame.type);
  }
}

/** @param {Record<string, any>} frame */
function onTurnCreated(frame) {
  const pending = state.pending?.clientId === frame.client_id ? state.pending : null;
  if (pending) state.pending = null;
  if (pending?.frame.type === "message.send" && pending.frame.documents) {
    state.files = []; // sent with the message: they are the chat's now
    showFiles();
  }
  /** @type {Conversation} */
  const conversation = frame.conversation;
  const isNew = state.conversation?.id !== conversation.id;
  state.conversation = conversation;
  if (isNew) history.pushState({ conversation: conversation.id }, "", conversationUrl(conversation.id));
  if (isNew && Object.keys(state.draftParams).length > 0) {
    // The first message was sent with them; from now on they are the chat's.
    socket.send({ type: "conversation.set_params", conversation: conversation.id, params: state.draftParams });
    state.draftParams = {};
  }
  showConversation(conversation);
  sidebar.setActive(conversation.id);
  sidebar.upsert(conversation);
  state.generation = followed(frame.assistant_message.id, 0);
  updateComposer();
  if (pending?.stopRequested) stop();
}

/**
 * @param {Conversation} conversation
 * @param {import("./types.js").BranchEntry[]} messages
 */
function onBranch(conversation, messages) {
  if (state.conversation?.id !== conversation.id) return;
  state.conversation = conversation;
  thread.render(messages);
  followStreamingReply();
  updateComposer();
}

/**
 * @param {string} id
 * @param {number} seq
 * @param {string} text
 */
function onDelta(id, seq, text) {
  const generation = state.generation;
  heard(id);
  if (!generation || generation.id !== id || seq <= generation.lastSeq) return; // not ours, or already shown
  if (seq !== generation.lastSeq + 1) {
    // A gap should not happen (the server reads the stream in order); ask again from what we have.
    socket.send({ type: "generation.watch", id, after: generation.lastSeq });
    return;
  }
  generation.lastSeq = seq;
  thread.appendText(id, text);
}

/**
 * @param {string} id
 * @param {ChatMessage | null} message
 * @param {string | null} error
 */
function onFinished(id, message, error) {
  thread.finish(id, message, error);
  if (state.generation?.id !== id) return;
  state.generation = null;
  const status = message?.status;
  announce(
    error
      ? interpolate(gettext("The reply failed: %(error)s"), { error }, true)
      : status === "cancelled"
        ? gettext("Reply stopped.")
        : gettext("Reply complete."),
  );
  updateComposer();
}

/**
 * @param {Conversation} conversation
 * @param {boolean} newTurn   another tab (or device) added a turn to it
 */
function onConversationUpdated(conversation, newTurn) {
  sidebar.upsert(conversation);
  if (state.conversation?.id === conversation.id) {
    state.conversation = conversation;
    showConversation(conversation);
    // Show the new turn here too: the branch as it is now, then its reply streaming (onBranch follows it).
    if (newTurn) socket.send({ type: "conversation.open", conversation: conversation.id });
  }
}

/** @param {string} id */
function onConversationDeleted(id) {
  sidebar.remove(id);
  if (state.conversation?.id === id) location.assign("/");
}

/**
 * @param {string} code
 * @param {string} message
 * @param {string | null} clientId
 */
function onError(code, message, clientId) {
  const pending = state.pending;
  if (pending && clientId === pending.clientId) {
    state.pending = null;
    for (const article of pending.articles) article.remove();
    if (!input.value.trim()) input.value = pending.content;
    autosize();
    // Over a plan's limit: the message says when to send again; the link shows the plans with more.
    const limited = code === "rate_limit_exceeded" || code === "insufficient_quota";
    showComposerError(message, limited ? { href: data.billing_url, text: gettext("See plans and usage") } : null);
    updateComposer();
    return;
  }
  if (code === "not_found" && state.generation) {
    state.generation = null; // the reply we followed is gone (deleted in another tab)
    updateComposer();
  }
  toast(message);
}

// Showing state ------------------------------------------------------------------------------------

/** @param {Conversation} conversation */
function showConversation(conversation) {
  titleElement.textContent = conversation.title || gettext("New chat");
  document.title = `${conversation.title || gettext("New chat")} · Djinn`;
  if (conversation.model && [...modelPicker.options].some((option) => option.value === conversation.model)) {
    modelPicker.value = conversation.model;
  }
  settingsButton.classList.toggle(
    "has-value",
    Boolean(conversation.system_prompt) || Object.keys(conversation.params ?? {}).length > 0,
  );
  // An archived chat says so where it is read, with the way back to the chat list.
  archivedNote.hidden = !conversation.archived;
  showProject(conversation.project ?? null);
  shareButton.hidden = false;
}

/** The project chip before the title: a link to the chat's project. @param {string | null} projectId */
function showProject(projectId) {
  const name = projectId ? projectNames.get(projectId) : undefined;
  projectChip.hidden = !name;
  if (!projectId || !name) return;
  projectChip.textContent = name;
  projectChip.href = `/p/${projectId}/`;
}

/**
 * @param {ConnectionState} connectionState
 * @param {number} retryInMs
 */
function showConnection(connectionState, retryInMs) {
  connection.dataset.state = connectionState;
  const label = {
    connecting: gettext("Connecting…"),
    open: gettext("Connected"),
    reconnecting:
      retryInMs > 0
        ? interpolate(gettext("Reconnecting in %(seconds)s s…"), { seconds: Math.ceil(retryInMs / 1000) }, true)
        : gettext("Reconnecting…"),
    offline: gettext("Offline"),
  }[connectionState];
  /** @type {HTMLElement} */ ($("[data-connection-label]")).textContent = label;
  connection.title = connectionState === "open" ? gettext("Connected to Djinn") : label;
  updateComposer();
}

function updateComposer() {
  const generating = state.generation !== null;
  const busy = generating || state.pending !== null;
  sendButton.hidden = generating;
  stopButton.hidden = !generating;
  stopButton.disabled = Boolean(state.generation?.stopping);
  stopButton.setAttribute("aria-label", state.generation?.stopping ? gettext("Stopping") : gettext("Stop generating"));
  sendButton.disabled = busy || !socket.isOpen;
  thread.setBusy(busy);
  app.classList.toggle("is-generating", generating);
}

/** @param {string} message */
function announce(message) {
  announcer.textContent = "";
  window.setTimeout(() => (announcer.textContent = message), 50);
}

/**
 * @param {string} message
 * @param {{ href: string, text: string } | null} [link]
 */
function showComposerError(message, link = null) {
  composerError.textContent = message;
  if (link) {
    const anchor = document.createElement("a");
    anchor.href = link.href;
    anchor.textContent = link.text;
    anchor.dataset.upgradeLink = "";
    composerError.append(" ", anchor);
  }
  composerError.hidden = false;
}

/** @param {string} message */
function toast(message) {
  const element = document.createElement("div");
  element.className = "toast toast-error";
  const text = document.createElement("p");
  text.textContent = message;
  const close = document.createElement("button");
  close.type = "button";
  close.className = "toast-close";
  close.setAttribute("aria-label", gettext("Dismiss"));
  close.textContent = "×";
  close.addEventListener("click", () => element.remove());
  element.append(text, close);
  toasts.append(element);
  window.setTimeout(() => element.remove(), 8000);
}

/**
 * The connection dropped before a command was answered: it may or may not have been carried out.
 * @param {{content: string, articles: HTMLElement[], frame: Record<string, unknown>}} pending
 */
function recoverPending(pending) {
  // The connection dropped before the answer came, so the command may or may not have reached the server: send
  // it again as it was. The server makes its turn once (by client_id), and answers with that turn either way.
  if (!socket.send(pending.frame)) {
    state.pending = null;
    for (const article of pending.articles) article.remove();
    if (pending.content && !input.value.trim()) input.value = pending.content;
    autosize();
    showComposerError(gettext("The connection dropped while sending. Your message is kept: send it again."));
  }
}

/** If the branch ends in a reply still being written (after a reload, or on another branch), follow it. */
function followStreamingReply() {
  const last = thread.lastMessage();
  const streaming = last?.role === "assistant" && (last.status === "queued" || last.status === "running");
  if (!last || !streaming) {
    if (state.generation && !thread.has(state.generation.id)) state.generation = null;
    return;
  }
  if (state.generation?.id === last.id) return;
  // The page shows the text saved up to last.seq; the stream goes on from there.
  state.generation = followed(last.id, last.seq);
  socket.send({ type: "generation.watch", id: last.id, after: last.seq });
}

/**
 * @param {string} id
 * @param {number} lastSeq
 */
function followed(id, lastSeq) {
  return { id, lastSeq, stopping: false, heardAt: Date.now(), stalls: 0, since: Date.now(), stateAskedAt: 0 };
}

// A reply that shows nothing after a moment: ask where it stands (queued behind others, or a model loading), and
// again every few seconds until its text comes; the thread says it beside the typing dots.
const ASK_STATE_AFTER_MS = 1_500;
const ASK_STATE_EVERY_MS = 3_000;
window.setInterval(() => {
  const generation = state.generation;
  if (!generation || generation.lastSeq > 0 || !thread.has(generation.id)) return;
  const now = Date.now();
  if (now - generation.since < ASK_STATE_AFTER_MS || now - generation.stateAskedAt < ASK_STATE_EVERY_MS) return;
  generation.stateAskedAt = now;
  socket.send({ type: "generation.state", id: generation.id });
}, 500);

/** The server said something about reply `id`: it is alive. @param {string} id */
function heard(id) {
  if (state.generation?.id !== id) return;
  state.generation.heardAt = Date.now();
  state.generation.stalls = 0;
}

/** The server lost the reply's stream for a moment (its Redis was away): watch again after a pause. @param {string} id */
function onInterrupted(id) {
  if (state.generation?.id !== id) return;
  announce(gettext("Reconnecting to the reply…"));
  window.setTimeout(() => {
    const generation = state.generation;
    if (generation?.id === id) socket.send({ type: "generation.watch", id, after: generation.lastSeq });
  }, REWATCH_AFTER_INTERRUPTION_MS);
}

/** A followed reply the server has been silent about: watch it again, then reconnect the socket. */
function checkStalled() {
  const generation = state.generation;
  if (!generation || !socket.isOpen || Date.now() - generation.heardAt < STALL_MS) return;
  generation.heardAt = Date.now();
  generation.stalls += 1;
  if (generation.stalls === 1) {
    socket.send({ type: "generation.watch", id: generation.id, after: generation.lastSeq });
  } else {
    socket.restart(); // onOpen watches it again on the new connection
  }
}

// Commands -----------------------------------------------------------------------------------------

function newClientId() {
  return typeof crypto.randomUUID === "function" ? crypto.randomUUID() : `${Date.now()}-${Math.random()}`;
}

function send() {
  const content = input.value.trim();
  composerError.hidden = true;
  if (!content) {
    showComposerError(gettext("Write a message first."));
    return;
  }
  if (state.generation || state.pending) return;
  if (state.files.some((file) => file.id === null)) {
    showComposerError(gettext("A file is still being attached: send once it is ready."));
    return;
  }
  const attached = state.files.map((file) => ({ id: /** @type {string} */ (file.id), name: file.name, kind: "", size_bytes: file.size }));
  const clientId = newClientId();
  const frame = {
    type: "message.send",
    client_id: clientId,
    conversation: state.conversation?.id ?? null,
    parent: thread.lastMessage()?.id ?? null,
    content,
    model: modelPicker.value || null,
    system_prompt: state.conversation ? null : state.draftSystemPrompt || null,
    params: state.conversation || Object.keys(state.draftParams).length === 0 ? null : state.draftParams,
    project: state.conversation ? null : state.draftProject,
    documents: attached.length ? attached.map((file) => file.id) : null,
  };
  if (!socket.send(frame)) {
    showComposerError(gettext("Not connected. Your message is kept: send it again once the connection is back."));
    return;
  }
  state.pending = { clientId, content, articles: thread.addPending(content, attached), frame };
  input.value = "";
  autosize();
  updateComposer();
}

/**
 * Upload files for the next message: each shows as a chip at once, and is sent with the message once uploaded.
 * @param {Iterable<File>} files
 */
function attachFiles(files) {
  composerError.hidden = true;
  for (const file of files) {
    if (state.files.length >= data.documents_max_files) {
      showComposerError(
        interpolate(gettext("A message carries at most %(count)s files."), { count: data.documents_max_files }, true),
      );
      break;
    }
    if (file.size > data.documents_max_bytes) {
      const mb = Math.floor(data.documents_max_bytes / (1024 * 1024));
      showComposerError(
        interpolate(gettext("“%(name)s” is too large: a file may have at most %(mb)s MB."), { name: file.name, mb }, true),
      );
      continue;
    }
    const entry = { key: ++fileKeys, name: file.name, size: file.size, id: /** @type {string | null} */ (null) };
    state.files.push(entry);
    upload(entry, file);
  }
  showFiles();
}

/**
 * @param {{key: number, name: string, size: number, id: string | null}} entry
 * @param {File} file
 */
async function upload(entry, file) {
  const body = new FormData();
  body.append("file", file);
  let error = "";
  try {
    const response = await fetch(data.documents_url, {
      method: "POST",
      body,
      headers: { "X-CSRFToken": csrfToken() },
      credentials: "same-origin",
    });
    const answer = response.headers.get("content-type")?.includes("json") ? await response.json() : {};
    if (response.ok && answer.id) {
      entry.id = answer.id;
    } else {
      const said = gettext("“%(name)s” could not be attached (%(status)s). Try again.");
      error = answer.error ?? interpolate(said, { name: file.name, status: response.status }, true);
    }
  } catch {
    const said = gettext("“%(name)s” could not be attached: the connection failed. Try again.");
    error = interpolate(said, { name: file.name }, true);
  }
  if (!state.files.includes(entry)) {
    if (entry.id) forgetFile(entry.id); // removed while it uploaded
    return;
  }
  if (error) {
    state.files = state.files.filter((item) => item !== entry);
    showComposerError(error);
  }
  showFiles();
}

/** @param {string} id */
function forgetFile(id) {
  fetch(`/documents/${id}/remove/`, { method: "POST", headers: { "X-CSRFToken": csrfToken() }, credentials: "same-origin" });
}

function csrfToken() {
  return document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/)?.[1] ?? "";
}

/** The composer's file chips: name, size or "uploading", and a button that removes it. */
function showFiles() {
  fileChips.hidden = state.files.length === 0;
  fileChips.replaceChildren(
    ...state.files.map((entry) => {
      const item = document.createElement("li");
      item.className = "file-chip";
      item.dataset.state = entry.id ? "ready" : "uploading";
      const name = document.createElement("span");
      name.className = "file-name";
      name.textContent = entry.name;
      const size = document.createElement("span");
      size.className = "file-size";
      size.textContent = entry.id ? formatSize(entry.size) : gettext("Attaching…");
      const remove = document.createElement("button");
      remove.type = "button";
      remove.className = "file-remove";
      remove.setAttribute("aria-label", interpolate(gettext("Remove %(name)s"), { name: entry.name }, true));
      remove.textContent = "×";
      remove.addEventListener("click", () => {
        state.files = state.files.filter((item) => item !== entry);
        if (entry.id) forgetFile(entry.id);
        composerError.hidden = true; // a complaint about the files is answered by removing one
        showFiles();
        input.focus();
      });
      item.append(name, size, remove);
      return item;
    }),
  );
}

function stop() {
  const generation = state.generation;
  if (!generation && state.pending) state.pending.stopRequested = true; // stopped once it has an id
  if (!generation || generation.stopping) return;
  if (socket.send({ type: "generation.cancel", id: generation.id })) {
    generation.stopping = true;
    updateComposer();
  }
}

/**
 * @param {Record<string, unknown>} frame
 */
function sendTurnCommand(frame) {
  if (state.generation || state.pending) return;
  const clientId = newClientId();
  const command = { ...frame, client_id: clientId };
  if (!socket.send(command)) {
    toast(gettext("Not connected: try again in a moment."));
    return;
  }
  state.pending = { clientId, content: "", articles: [], frame: command };
  updateComposer();
}

/**
 * Replace a user message's text with an editor; sending it makes a new branch from there.
 * @param {HTMLElement} article
 */
function startEdit(article) {
  const id = article.dataset.messageId ?? "";
  const view = thread.view(id);
  if (!view || article.querySelector(".message-editor")) return;
  const form = document.createElement("form");
  form.className = "message-editor";
  const label = document.createElement("label");
  label.className = "visually-hidden";
  label.htmlFor = `edit-${id}`;
  label.textContent = gettext("Edit your message");
  const area = document.createElement("textarea");
  area.id = `edit-${id}`;
  area.value = view.text;
  area.rows = Math.min(12, Math.max(2, view.text.split("\n").length));
  const buttons = document.createElement("div");
  buttons.className = "message-editor-buttons";
  const cancel = document.createElement("button");
  cancel.type = "button";
  cancel.className = "button button-ghost button-small";
  cancel.textContent = gettext("Cancel");
  const save = document.createElement("button");
  save.type = "submit";
  save.className = "button button-primary button-small";
  save.textContent = gettext("Send");
  buttons.append(cancel, save);
  form.append(label, area, buttons);

  const close = () => {
    form.remove();
    view.body.hidden = false;
    /** @type {HTMLElement | null} */ (article.querySelector("[data-action=edit]"))?.focus();
  };
  cancel.addEventListener("click", close);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const content = area.value.trim();
    if (!content || content === view.text.trim()) return close();
    sendTurnCommand({ type: "message.edit", message: id, content });
  });
  area.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      form.requestSubmit();
    } else if (event.key === "Escape") {
      event.preventDefault();
      event.stopPropagation();
      close();
    }
  });
  view.body.hidden = true;
  view.body.after(form);
  area.focus();
}

/**
 * @param {HTMLButtonElement} button
 * @param {string} text
 */
async function copyText(button, text) {
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    toast(gettext("Copying is not allowed here: select the text instead."));
    return;
  }
  button.classList.add("is-done");
  if (button.classList.contains("code-copy")) button.textContent = gettext("Copied");
  announce(gettext("Copied."));
  window.setTimeout(() => {
    button.classList.remove("is-done");
    if (button.classList.contains("code-copy")) button.textContent = gettext("Copy");
  }, 1500);
}

/** @param {MouseEvent} event */
function onThreadClick(event) {
  const button = /** @type {HTMLElement} */ (event.target).closest("button[data-action]");
  if (!(button instanceof HTMLButtonElement) || button.disabled) return;
  const article = /** @type {HTMLElement | null} */ (button.closest("[data-message-id]"));
  const id = article?.dataset.messageId ?? "";
  const view = thread.view(id);
  switch (button.dataset.action) {
    case "copy":
      if (view) copyText(button, view.text);
      break;
    case "copy-code":
      copyText(button, button.closest(".code-block")?.querySelector("code")?.textContent ?? "");
      break;
    case "edit":
      if (article) startEdit(article);
      break;
    case "regenerate":
      sendTurnCommand({ type: "message.regenerate", message: id });
      break;
    case "continue":
      sendTurnCommand({ type: "message.continue", message: id });
      break;
    case "feedback": {
      // A second press on the same thumb takes the rating back.
      const rating = Number(button.dataset.rating);
      const frame = { type: "message.feedback", message: id, rating: view?.message.feedback === rating ? null : rating };
      if (!socket.send(frame)) toast(gettext("Not connected: try again in a moment."));
      break;
    }
    case "branch-prev":
    case "branch-next": {
      if (!view || state.generation || state.pending) break;
      const step = button.dataset.action === "branch-next" ? 1 : -1;
      const target = view.message.sibling_ids[view.message.sibling_index + step];
      if (target && !socket.send({ type: "conversation.switch_branch", message: target })) {
        toast(gettext("Not connected: try again in a moment."));
      }
      break;
    }
  }
}

// Layout -------------------------------------------------------------------------------------------

function autosize() {
  input.style.height = "auto";
  input.style.height = `${Math.min(input.scrollHeight, 240)}px`;
}

/** @param {boolean} open */
function setSidebar(open) {
  if (narrowScreen.matches) {
    app.classList.toggle("sidebar-open", open);
    app.classList.remove("sidebar-collapsed");
  } else {
    app.classList.toggle("sidebar-collapsed", !open);
    app.classList.remove("sidebar-open");
  }
  sidebarToggle.setAttribute("aria-expanded", String(open));
  if (open && narrowScreen.matches) /** @type {HTMLElement} */ ($("[data-conversation-search]")).focus();
}

function sidebarIsOpen() {
  return narrowScreen.matches ? app.classList.contains("sidebar-open") : !app.classList.contains("sidebar-collapsed");
}

// Wiring -------------------------------------------------------------------------------------------

composer.addEventListener("submit", (event) => {
  event.preventDefault();
  send();
});
input.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    send();
  }
});
input.addEventListener("input", () => {
  autosize();
  composerError.hidden = true;
});
stopButton.addEventListener("click", stop);
attachButton.addEventListener("click", () => fileInput.click());
fileInput.addEventListener("change", () => {
  attachFiles(fileInput.files ?? []);
  fileInput.value = ""; // the same file can be chosen again
});
// Files dropped on the composer are attached too.
composer.addEventListener("dragover", (event) => {
  if (event.dataTransfer?.types.includes("Files")) {
    event.preventDefault();
    composer.classList.add("is-dropping");
  }
});
composer.addEventListener("dragleave", () => composer.classList.remove("is-dropping"));
composer.addEventListener("drop", (event) => {
  composer.classList.remove("is-dropping");
  if (!event.dataTransfer?.files.length) return;
  event.preventDefault();
  attachFiles(event.dataTransfer.files);
});
$("[data-thread]").addEventListener("click", (event) => onThreadClick(/** @type {MouseEvent} */ (event)));

document.addEventListener("keydown", (event) => {
  if (event.defaultPrevented) return;
  if (event.key === "Escape") {
    if (document.querySelector("dialog[open]")) return; // the dialog closes itself
    if (state.generation || state.pending) {
      event.preventDefault();
      stop();
    } else if (narrowScreen.matches && sidebarIsOpen()) {
      setSidebar(false);
      sidebarToggle.focus();
    }
  } else if (event.key.toLowerCase() === "o" && event.shiftKey && (event.ctrlKey || event.metaKey)) {
    event.preventDefault();
    location.assign("/");
  } else if (event.key.toLowerCase() === "k" && (event.ctrlKey || event.metaKey) && !event.shiftKey) {
    event.preventDefault();
    if (!sidebarIsOpen()) setSidebar(true);
    searchInput.focus();
    searchInput.select();
  } else if (event.key === "?" && !isTyping(event.target) && !document.querySelector("dialog[open]")) {
    event.preventDefault();
    shortcutsDialog.showModal();
  }
});

/** @param {EventTarget | null} target */
function isTyping(target) {
  return target instanceof HTMLElement && (target.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(target.tagName));
}

$("[data-open-shortcuts]").addEventListener("click", () => shortcutsDialog.showModal());
// Scrolled up from the newest message: a button takes you back down.
scroller.addEventListener("scroll", () => {
  jumpButton.hidden = thread.isNearBottom();
});
jumpButton.addEventListener("click", () => {
  thread.scrollToBottom();
  jumpButton.hidden = true;
  input.focus();
});

sidebarToggle.addEventListener("click", () => setSidebar(!sidebarIsOpen()));
$("[data-sidebar-backdrop]").addEventListener("click", () => setSidebar(false));
narrowScreen.addEventListener("change", () => {
  app.classList.remove("sidebar-open", "sidebar-collapsed");
  sidebarToggle.setAttribute("aria-expanded", String(!narrowScreen.matches));
});
sidebarToggle.setAttribute("aria-expanded", String(!narrowScreen.matches));

shareButton.addEventListener("click", () => {
  if (!state.conversation) return;
  if (!socket.send({ type: "conversation.share", conversation: state.conversation.id })) {
    toast(gettext("Not connected: try again in a moment."));
  }
});
$("[data-share-copy]").addEventListener("click", (event) => {
  copyText(/** @type {HTMLButtonElement} */ (event.currentTarget), shareUrl.value);
});

/**
 * A link to this chat was made: show it, ready to copy.
 * @param {string} conversationId
 * @param {string} url   the link's path
 */
function onShared(conversationId, url) {
  if (state.conversation?.id !== conversationId) return;
  shareUrl.value = new URL(url, location.origin).href;
  shareDialog.showModal();
  shareUrl.select();
}

unarchiveButton.addEventListener("click", () => {
  if (state.conversation) {
    socket.send({ type: "conversation.archive", conversation: state.conversation.id, archived: false });
  }
});
settingsButton.addEventListener("click", () => {
  systemPromptInput.value = state.conversation ? state.conversation.system_prompt : state.draftSystemPrompt;
  const params = state.conversation ? state.conversation.params ?? {} : state.draftParams;
  temperatureInput.value = params.temperature === undefined ? "" : String(params.temperature);
  maxTokensInput.value = params.max_tokens === undefined ? "" : String(params.max_tokens);
  projectInput.value = (state.conversation ? state.conversation.project : state.draftProject) ?? "";
  settingsDialog.showModal();
});
settingsDialog.addEventListener("close", () => {
  if (settingsDialog.returnValue !== "save") return;
  const value = systemPromptInput.value.trim();
  /** @type {Record<string, number>} */
  const params = {};
  if (temperatureInput.value !== "") params.temperature = Number(temperatureInput.value);
  if (maxTokensInput.value !== "") params.max_tokens = Number(maxTokensInput.value);
  const project = projectInput.value || null;
  if (state.conversation) {
    const id = state.conversation.id;
    const sent =
      socket.send({ type: "conversation.set_system_prompt", conversation: id, system_prompt: value }) &&
      socket.send({ type: "conversation.set_params", conversation: id, params }) &&
      (project === (state.conversation.project ?? null) ||
        socket.send({ type: "conversation.set_project", conversation: id, project }));
    if (!sent) toast(gettext("Not connected: the settings were not saved."));
  } else {
    state.draftSystemPrompt = value;
    state.draftParams = params;
    state.draftProject = project;
    showProject(project);
    settingsButton.classList.toggle("has-value", Boolean(value) || Object.keys(params).length > 0);
  }
});
deleteDialog.addEventListener("close", () => {
  const conversation = state.deleting;
  state.deleting = null;
  if (deleteDialog.returnValue !== "delete" || !conversation) return;
  if (!socket.send({ type: "conversation.delete", conversation: conversation.id })) {
    toast(gettext("Not connected: the chat was not deleted."));
  }
});

// Only conversations have history entries; going back or forward loads that page.
window.addEventListener("popstate", () => location.reload());

thread.render(data.messages);
if (state.conversation) showConversation(state.conversation);
followStreamingReply();
socket.start();
window.setInterval(checkStalled, 5_000);
updateComposer();
input.focus();
