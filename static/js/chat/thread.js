// The thread: the branch of messages shown, and the reply streaming into its last message.
// Each message is an <article data-message-id>; buttons carry data-action and are handled by main.js.

import { iconButton } from "./icons.js";
import { renderMarkdown } from "./markdown.js";

/** @typedef {import("./types.js").BranchEntry} BranchEntry */
/** @typedef {import("./types.js").ChatMessage} ChatMessage */

/**
 * @typedef {object} MessageView
 * @property {BranchEntry} message
 * @property {HTMLElement} article
 * @property {HTMLElement} body
 * @property {HTMLElement} note
 * @property {string} text   what the body shows (grows while streaming)
 * @property {boolean} renderPending
 * @property {string} [waitState]   where it stands while it shows nothing (generation.state)
 * @property {HTMLElement} details   a finished reply's model, time and thumbs up / down
 */

const STICK_TO_BOTTOM_PX = 120;
// Times, dates and numbers in the page's language (base.html's <html lang>), not the browser's.
const LANGUAGE = document.documentElement.lang || undefined;
const TIME_FORMAT = new Intl.DateTimeFormat(LANGUAGE, { hour: "numeric", minute: "2-digit" });
const DATE_TIME_FORMAT = new Intl.DateTimeFormat(LANGUAGE, { dateStyle: "full", timeStyle: "short" });
const SIZE_FORMAT = new Intl.NumberFormat(LANGUAGE, { minimumFractionDigits: 1, maximumFractionDigits: 1 });
/** @type {Record<string, string>} */
const WAIT_STATES = {
  queued: gettext("Waiting for a free worker…"),
  loading_model: gettext("Loading the model… the first reply after a start takes a moment."),
};

export class Thread {
  /**
   * @param {HTMLElement} scroller   the element that scrolls
   * @param {HTMLElement} list   where the articles go
   * @param {string} logoUrl
   * @param {Map<string, string>} modelNames
   */
  constructor(scroller, list, logoUrl, modelNames) {
    this.scroller = scroller;
    this.list = list;
    this.logoUrl = logoUrl;
    /** A model's name -> the name people see. */
    this.modelNames = modelNames;
    /** @type {Map<string, MessageView>} */
    this.views = new Map();
    /** @type {BranchEntry[]} */
    this.entries = [];
    this.busy = false;
  }

  /** @param {string} id */
  has(id) {
    return this.views.has(id);
  }

  /** @returns {BranchEntry | null} */
  lastMessage() {
    return this.entries.at(-1) ?? null;
  }

  /**
   * Replace the whole thread with a branch.
   * @param {BranchEntry[]} entries
   */
  render(entries) {
    this.entries = entries;
    this.views.clear();
    const articles = entries.map((entry, index) =>
      this.#article(entry, index === entries.length - 1, entries[index - 1]?.role === "assistant"),
    );
    this.list.replaceChildren(...articles);
    this.list.closest("[data-chat-main]")?.classList.toggle("is-empty", entries.length === 0);
    this.setBusy(this.busy);
    this.scrollToBottom();
  }

  /**
   * Show a turn the user just sent, before the server answers (replaced by the branch it sends back).
   * @param {string} content
   * @param {import("./types.js").Attachment[]} [attachments]   its files
   * @returns {HTMLElement[]}
   */
  addPending(content, attachments = []) {
    const now = new Date().toISOString();
    /** @type {(role: "user" | "assistant", text: string) => BranchEntry} */
    const entry = (role, text) => ({
      id: `pending-${role}`,
      parent: null,
      role,
      content: text,
      seq: 0,
      status: role === "user" ? "completed" : "queued",
      finish_reason: null,
      error: null,
      model: "",
      created_at: now,
      sibling_index: 0,
      sibling_count: 1,
      sibling_ids: [],
    });
    const articles = [
      this.#article({ ...entry("user", content), attachments }, false),
      this.#article(entry("assistant", ""), true),
    ];
    for (const article of articles) article.classList.add("is-pending");
    this.list.append(...articles);
    this.list.closest("[data-chat-main]")?.classList.remove("is-empty");
    this.scrollToBottom();
    return articles;
  }

  /**
   * Append streamed text to a reply. Rendering waits for the next frame, so a burst of deltas costs one
   * Markdown pass.
   * @param {string} id
   * @param {string} text
   */
  appendText(id, text) {
    const view = this.views.get(id);
    if (!view) return;
    view.text += text;
    view.message.status = "running";
    this.#scheduleRender(view);
  }

  /**
   * Where a reply that shows nothing yet stands (generation.state): said beside its typing dots.
   * @param {string} id
   * @param {string} state   queued, loading_model, running, or a final status
   */
  setWaitState(id, state) {
    const view = this.views.get(id);
    if (!view || view.waitState === state) return;
    view.waitState = state;
    if (!view.text) this.#renderBody(view);
  }

  /**
   * A message changed elsewhere (its rating, in this tab or another): show it as it is now.
   * @param {ChatMessage} message
   */
  update(message) {
    const view = this.views.get(message.id);
    if (!view) return;
    Object.assign(view.message, message);
    this.#renderDetails(view);
  }

  /**
   * A reply ended (done, stopped or failed): show its saved state.
   * @param {string} id
   * @param {ChatMessage | null} message   the saved message, when the server sent it
   * @param {string | null} error   what went wrong, for a failed one
   */
  finish(id, message, error) {
    const view = this.views.get(id);
    if (!view) return;
    if (message) {
      Object.assign(view.message, message);
      view.text = message.content;
    } else if (error) {
      view.message.status = "failed";
      view.message.error = error;
    } else {
      view.message.status = "completed"; // ended, but its saved state is gone (deleted meanwhile)
    }
    view.article.setAttribute("aria-busy", "false");
    this.#renderBody(view);
  }

  /**
   * While a reply streams, the buttons that would start another one are disabled.
   * @param {boolean} busy
   */
  setBusy(busy) {
    this.busy = busy;
    for (const button of this.list.querySelectorAll("[data-action]")) {
      const action = /** @type {HTMLElement} */ (button).dataset.action ?? "";
      if (["regenerate", "edit", "branch-prev", "branch-next", "continue"].includes(action)) {
        /** @type {HTMLButtonElement} */ (button).disabled = busy || button.hasAttribute("data-disabled");
      }
    }
  }

  scrollToBottom() {
    this.scroller.scrollTop = this.scroller.scrollHeight;
  }

  isNearBottom() {
    const { scrollTop, scrollHeight, clientHeight } = this.scroller;
    return scrollHeight - scrollTop - clientHeight < STICK_TO_BOTTOM_PX;
  }

  /**
   * @param {string} id
   * @returns {MessageView | undefined}
   */
  view(id) {
    return this.views.get(id);
  }

  /**
   * @param {BranchEntry} message
   * @param {boolean} isLast
   * @param {boolean} [continues]   a reply that continues the one before it: shown as part of it
   */
  #article(message, isLast, continues = false) {
    const article = document.createElement("article");
    article.className = `message message-${message.role}`;
    if (continues) article.classList.add("message-continuation");
    article.dataset.messageId = message.id;
    const streaming = message.status === "queued" || message.status === "running";
    if (message.role === "assistant") {
      // The live region is the reply itself: busy while it streams, read out once it is complete.
      article.setAttribute("aria-live", "polite");
      article.setAttribute("aria-busy", String(streaming));
      const avatar = document.createElement("img");
      avatar.className = "message-avatar";
      avatar.src = this.logoUrl;
      avatar.alt = "";
      article.append(avatar);
    }

    const main = document.createElement("div");
    main.className = "message-main";
    const heading = document.createElement("h2");
    heading.className = "visually-hidden";
    heading.textContent =
      message.role === "user" ? gettext("You said:") : continues ? gettext("Djinn went on:") : gettext("Djinn said:");
    const body = document.createElement("div");
    body.className = message.role === "assistant" ? "message-body markdown" : "message-body";
    const note = document.createElement("p");
    note.className = "message-note";
    const actions = this.#actions(message, isLast);
    const details = document.createElement("span");
    details.className = "message-details";
    actions.append(details);
    main.append(heading);
    if (message.attachments?.length) main.append(fileList(message.attachments));
    main.append(body);
    if (message.sources?.length) main.append(sourceList(message.sources));
    main.append(note, actions);
    article.append(main);

    /** @type {MessageView} */
    const view = { message, article, body, note, details, text: message.content, renderPending: false };
    this.views.set(message.id, view);
    this.#renderBody(view);
    return article;
  }

  /**
   * @param {BranchEntry} message
   * @param {boolean} isLast
   */
  #actions(message, isLast) {
    const actions = document.createElement("div");
    actions.className = "message-actions";
    if (message.sibling_count > 1) {
      const nav = document.createElement("div");
      nav.className = "branch-nav";
      nav.setAttribute("role", "group");
      nav.setAttribute(
        "aria-label",
        message.role === "user" ? gettext("Versions of this message") : gettext("Versions of this reply"),
      );
      const prev = iconButton("left", gettext("Previous version"), "branch-prev");
      const next = iconButton("right", gettext("Next version"), "branch-next");
      if (message.sibling_index === 0) prev.setAttribute("data-disabled", "");
      if (message.sibling_index === message.sibling_count - 1) next.setAttribute("data-disabled", "");
      prev.disabled = prev.hasAttribute("data-disabled");
      next.disabled = next.hasAttribute("data-disabled");
      const position = document.createElement("span");
      position.className = "branch-position";
      position.textContent = `${message.sibling_index + 1} / ${message.sibling_count}`;
      nav.append(prev, position, next);
      actions.append(nav);
    }
    actions.append(iconButton("copy", gettext("Copy"), "copy"));
    if (message.role === "user") actions.append(iconButton("edit", gettext("Edit message"), "edit"));
    if (message.role === "assistant" && isLast) {
      actions.append(iconButton("regenerate", gettext("Regenerate reply"), "regenerate"));
    }
    return actions;
  }

  /** @param {MessageView} view */
  #scheduleRender(view) {
    if (view.renderPending) return;
    view.renderPending = true;
    requestAnimationFrame(() => {
      view.renderPending = false;
      const stick = this.isNearBottom();
      this.#renderBody(view);
      if (stick) this.scrollToBottom();
    });
  }

  /**
   * A finished reply says which model wrote it and when, and offers thumbs up and down (pressed: the rating).
   * @param {MessageView} view
   */
  #renderDetails(view) {
    const { message } = view;
    view.details.replaceChildren();
    if (message.role !== "assistant" || !(message.status === "completed" || message.status === "cancelled")) return;
    for (const [rating, name, label] of /** @type {const} */ ([
      [1, "thumb-up", gettext("Good reply")],
      [-1, "thumb-down", gettext("Bad reply")],
    ])) {
      const button = iconButton(name, label, "feedback");
      button.dataset.rating = String(rating);
      button.setAttribute("aria-pressed", String(message.feedback === rating));
      view.details.append(button);
    }
    const meta = document.createElement("span");
    meta.className = "message-meta";
    const when = new Date(message.created_at);
    const time = document.createElement("time");
    time.dateTime = message.created_at;
    time.textContent = TIME_FORMAT.format(when);
    time.title = DATE_TIME_FORMAT.format(when);
    meta.append(message.model ? `${this.modelNames.get(message.model) ?? message.model} · ` : "", time);
    view.details.append(meta);
  }

  /** Whether the reply `id` goes on in the next message of the branch ("continue generating"). @param {string} id */
  #continued(id) {
    const index = this.entries.findIndex((entry) => entry.id === id);
    return index >= 0 && this.entries[index + 1]?.role === "assistant";
  }

  /** @param {MessageView} view */
  #renderBody(view) {
    const { message } = view;
    this.#renderDetails(view);
    if (message.role === "assistant") view.body.replaceChildren(renderMarkdown(view.text));
    else view.body.textContent = view.text;

    const streaming = message.status === "queued" || message.status === "running";
    view.article.classList.toggle("is-streaming", streaming);
    view.note.replaceChildren();
    view.note.className = "message-note";
    if (streaming && !view.text) {
      const dots = document.createElement("span");
      dots.className = "typing";
      dots.setAttribute("aria-label", message.status === "queued" ? gettext("Waiting for the model") : gettext("Thinking"));
      dots.append(document.createElement("i"), document.createElement("i"), document.createElement("i"));
      view.note.append(dots);
      const said = WAIT_STATES[view.waitState ?? ""];
      if (said) {
        const label = document.createElement("span");
        label.className = "wait-state";
        label.textContent = said;
        view.note.append(label);
      }
    } else if (message.status === "cancelled") {
      view.note.textContent = gettext("Stopped.");
    } else if (message.status === "failed") {
      view.note.classList.add("is-error");
      view.note.textContent = message.error || gettext("The reply could not be generated.");
    } else if (message.finish_reason === "length" && !this.#continued(message.id)) {
      view.note.textContent = gettext("The reply reached its length limit.");
      if (this.entries.at(-1)?.id === message.id) {
        // Only the end of the branch goes on: the page shows what follows it as the same reply.
        const more = document.createElement("button");
        more.type = "button";
        more.className = "button button-secondary button-small continue-button";
        more.dataset.action = "continue";
        more.textContent = gettext("Continue generating");
        more.disabled = this.busy;
        view.note.append(" ", more);
      }
    }
  }
}

/**
 * A user message's files, as chips: name and size.
 * @param {import("./types.js").Attachment[]} attachments
 */
export function fileList(attachments) {
  const list = document.createElement("ul");
  list.className = "message-files";
  list.setAttribute("aria-label", gettext("Attached files"));
  for (const attachment of attachments) {
    const item = document.createElement("li");
    item.className = "file-chip";
    const name = document.createElement("span");
    name.className = "file-name";
    name.textContent = attachment.name;
    const size = document.createElement("span");
    size.className = "file-size";
    size.textContent = formatSize(attachment.size_bytes);
    item.append(name, size);
    list.append(item);
  }
  return list;
}

/** @param {number} bytes */
export function formatSize(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${Math.round(bytes / 1024)} KB`;
  return `${SIZE_FORMAT.format(bytes / (1024 * 1024))} MB`;
}

const SOURCE_EXCERPT_CHARS = 320;

/**
 * The passages of the chat's documents a reply was given, numbered as the model saw them ([1], [2], …).
 * @param {import("./types.js").Source[]} sources
 */
function sourceList(sources) {
  const details = document.createElement("details");
  details.className = "message-sources";
  const summary = document.createElement("summary");
  const names = [...new Set(sources.map((source) => source.name))];
  summary.textContent = interpolate(gettext("Sources: %(names)s"), { names: names.join(", ") }, true);
  const list = document.createElement("ol");
  for (const source of sources) {
    const item = document.createElement("li");
    const title = document.createElement("strong");
    title.textContent = source.page
      ? interpolate(gettext("%(name)s, page %(page)s (part %(part)s)"), source, true)
      : interpolate(gettext("%(name)s (part %(part)s)"), source, true);
    const excerpt = document.createElement("blockquote");
    excerpt.textContent =
      source.text.length > SOURCE_EXCERPT_CHARS ? `${source.text.slice(0, SOURCE_EXCERPT_CHARS)}…` : source.text;
    item.append(title, excerpt);
    list.append(item);
  }
  details.append(summary, list);
  return details;
}
