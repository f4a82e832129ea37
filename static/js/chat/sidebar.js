// The conversation list: grouped by date (pinned first), searchable as you type, with a menu per
// conversation (rename inline, pin, archive, delete). Writes go through the WebSocket; the list changes
// when the server's conversation.updated / conversation.deleted / conversation.list events arrive.

import { icon } from "./icons.js";

/** @typedef {import("./types.js").Conversation} Conversation */

/**
 * @typedef {object} SidebarOptions
 * @property {(frame: Record<string, unknown>) => boolean} send
 * @property {(conversation: Conversation) => void} askDelete   opens the confirmation
 * @property {(message: string) => void} notify
 * @property {string | null} next   the cursor of the page after the conversations given (null: there is none)
 */

const SEARCH_DELAY_MS = 200;
const DAY_MS = 24 * 60 * 60 * 1000;

/** @param {string} id */
export function conversationUrl(id) {
  return `/c/${id}/`;
}

export class Sidebar {
  /**
   * @param {HTMLElement} root
   * @param {Conversation[]} conversations
   * @param {string | null} activeId
   * @param {SidebarOptions} options
   */
  constructor(root, conversations, activeId, options) {
    this.root = root;
    this.options = options;
    this.activeId = activeId;
    /** @type {Conversation[]} */
    this.items = conversations;
    this.query = "";
    this.archived = false;
    /** The cursor of the next page of the list shown (conversation.search's `after`); null on the last page. */
    this.next = options.next;
    /** The cursor of the page asked for and not yet answered. */
    /** @type {string | null} */
    this.loadingAfter = null;
    // The "more" button at the end of the list loads the next page when it is clicked or scrolled into view.
    this.moreObserver = new IntersectionObserver((entries) => {
      if (entries.some((entry) => entry.isIntersecting)) this.loadMore();
    });
    this.list = /** @type {HTMLElement} */ (root.querySelector("[data-conversation-list]"));
    this.search = /** @type {HTMLInputElement} */ (root.querySelector("[data-conversation-search]"));
    this.archivedToggle = /** @type {HTMLButtonElement} */ (root.querySelector("[data-archived-toggle]"));
    this.heading = /** @type {HTMLElement} */ (root.querySelector("[data-list-heading]"));
    this.menu = this.#buildMenu();
    /** @type {HTMLButtonElement | null} */
    this.menuOpener = null;
    /** @type {number | undefined} */
    this.searchTimer = undefined;

    this.search.addEventListener("input", () => {
      window.clearTimeout(this.searchTimer);
      this.searchTimer = window.setTimeout(() => this.refresh(), SEARCH_DELAY_MS);
    });
    this.search.addEventListener("keydown", (event) => {
      if (event.key === "Escape" && this.search.value) {
        event.stopPropagation();
        this.search.value = "";
        this.refresh();
      }
    });
    this.archivedToggle.addEventListener("click", () => {
      this.archived = !this.archived;
      this.archivedToggle.setAttribute("aria-pressed", String(this.archived));
      this.refresh();
    });
    this.list.addEventListener("click", (event) => {
      const target = /** @type {HTMLElement} */ (event.target);
      const button = target.closest("[data-conversation-menu]");
      if (button) this.#openMenu(/** @type {HTMLButtonElement} */ (button));
      if (target.closest("[data-load-more]")) this.loadMore();
    });
    document.addEventListener("click", (event) => {
      const target = /** @type {Node} */ (event.target);
      if (!this.menu.hidden && !this.menu.contains(target) && !this.menuOpener?.contains(target)) this.#closeMenu(false);
    });
    this.render();
  }

  /** Ask the server for the list that matches the search box and the archived switch. */
  refresh() {
    this.query = this.search.value.trim();
    this.loadingAfter = null;
    this.options.send({ type: "conversation.search", query: this.query, archived: this.archived });
  }

  /** Ask for the page after the one shown last, once. */
  loadMore() {
    if (!this.next || this.loadingAfter) return;
    this.loadingAfter = this.next;
    const frame = { type: "conversation.search", query: this.query, archived: this.archived, after: this.next };
    if (!this.options.send(frame)) this.loadingAfter = null; // offline: the button stays, to try again
  }

  /**
   * The server's answer to a search: the first page (replaces the list) or a later one (added to it).
   * @param {Conversation[]} conversations
   * @param {string} query
   * @param {boolean} archived
   * @param {string | null} after   the cursor it was asked with (null: the first page)
   * @param {string | null} next
   */
  setList(conversations, query, archived, after, next) {
    if (query !== this.query || archived !== this.archived) return; // an answer to an older search
    if (after) {
      if (after !== this.loadingAfter) return; // a page of a list since replaced
      const shown = new Set(this.items.map((item) => item.id));
      this.items = [...this.items, ...conversations.filter((item) => !shown.has(item.id))];
    } else {
      this.items = conversations;
    }
    this.next = next;
    this.loadingAfter = null;
    this.render();
  }

  /**
   * A conversation changed (here, in another tab, or its title was generated). It stays in, or joins,
   * the list shown when it belongs there; a search only updates the results it already holds.
   * @param {Conversation} conversation
   */
  upsert(conversation) {
    const others = this.items.filter((item) => item.id !== conversation.id);
    const listed = others.length !== this.items.length;
    const belongs = conversation.archived === this.archived && (listed || !this.query);
    this.items = belongs ? [conversation, ...others].sort(byPinnedThenRecent) : others;
    this.render();
  }

  /** @param {string} id */
  remove(id) {
    this.items = this.items.filter((item) => item.id !== id);
    this.render();
  }

  /** @param {string | null} id */
  setActive(id) {
    this.activeId = id;
    this.render();
  }

  /** @param {string} id */
  get(id) {
    return this.items.find((item) => item.id === id);
  }

  render() {
    const groups = this.query ? [{ label: gettext("Results"), items: this.items }] : groupByDate(this.items);
    this.heading.textContent = this.archived ? gettext("Archived chats") : gettext("Chats");
    const sections = groups
      .filter((group) => group.items.length > 0)
      .map((group) => {
        const section = document.createElement("section");
        section.className = "conversation-group";
        const title = document.createElement("h3");
        title.className = "conversation-group-title";
        title.textContent = group.label;
        const list = document.createElement("ul");
        list.append(...group.items.map((conversation) => this.#item(conversation)));
        section.append(title, list);
        return section;
      });
    if (sections.length === 0) {
      const empty = document.createElement("p");
      empty.className = "conversation-empty";
      empty.textContent = this.query
        ? gettext("No chat matches.")
        : this.archived
          ? gettext("No archived chats.")
          : gettext("No chats yet.");
      sections.push(/** @type {any} */ (empty));
    }
    this.moreObserver.disconnect();
    if (this.next) {
      const more = document.createElement("button");
      more.type = "button";
      more.className = "conversation-load-more";
      more.dataset.loadMore = "";
      more.textContent = gettext("Load older chats");
      sections.push(/** @type {any} */ (more));
      this.moreObserver.observe(more);
    }
    this.list.replaceChildren(...sections);
  }

  /** @param {Conversation} conversation */
  #item(conversation) {
    const item = document.createElement("li");
    item.className = "conversation-item";
    item.dataset.conversationId = conversation.id;
    const link = document.createElement("a");
    link.className = "conversation-link";
    link.href = conversationUrl(conversation.id);
    if (conversation.pinned) {
      const pin = icon("pin");
      pin.classList.add("conversation-pin");
      link.append(pin);
    }
    const title = document.createElement("span");
    title.className = "conversation-title";
    title.textContent = conversation.title || gettext("New chat");
    link.append(title);
    if (conversation.id === this.activeId) link.setAttribute("aria-current", "page");
    const more = document.createElement("button");
    more.type = "button";
    more.className = "conversation-more";
    more.dataset.conversationMenu = conversation.id;
    const name = conversation.title || gettext("New chat");
    more.setAttribute("aria-label", interpolate(gettext("Options for %(name)s"), { name }, true));
    more.setAttribute("aria-haspopup", "menu");
    more.setAttribute("aria-expanded", "false");
    more.append(icon("more"));
    item.append(link, more);
    return item;
  }

  #buildMenu() {
    const menu = document.createElement("div");
    menu.className = "popover-menu";
    menu.setAttribute("role", "menu");
    menu.hidden = true;
    menu.addEventListener("click", (event) => {
      const item = /** @type {HTMLElement} */ (event.target).closest("[data-menu-action]");
      if (item) this.#menuAction(/** @type {HTMLElement} */ (item).dataset.menuAction ?? "");
    });
    menu.addEventListener("keydown", (event) => {
      const items = /** @type {HTMLElement[]} */ ([...menu.querySelectorAll("[role=menuitem]")]);
      const index = items.indexOf(/** @type {HTMLElement} */ (document.activeElement));
      if (event.key === "ArrowDown" || event.key === "ArrowUp") {
        event.preventDefault();
        const step = event.key === "ArrowDown" ? 1 : -1;
        items[(index + step + items.length) % items.length]?.focus();
      } else if (event.key === "Escape") {
        event.stopPropagation();
        this.#closeMenu(true);
      } else if (event.key === "Tab") {
        this.#closeMenu(false);
      }
    });
    document.body.append(menu);
    return menu;
  }

  /** @param {HTMLButtonElement} opener */
  #openMenu(opener) {
    const wasOpenHere = !this.menu.hidden && this.menuOpener === opener;
    this.#closeMenu(false);
    if (wasOpenHere) return;
    const conversation = this.get(opener.dataset.conversationMenu ?? "");
    if (!conversation) return;
    /** @type {[string, string, import("./icons.js").IconName][]} */
    const entries = [
      ["rename", gettext("Rename"), "rename"],
      ["pin", conversation.pinned ? gettext("Unpin") : gettext("Pin"), "pin"],
      ["archive", conversation.archived ? gettext("Unarchive") : gettext("Archive"), "archive"],
      ["delete", gettext("Delete"), "trash"],
    ];
    this.menu.replaceChildren(
      ...entries.map(([action, label, iconName]) => {
        const item = document.createElement("button");
        item.type = "button";
        item.setAttribute("role", "menuitem");
        item.dataset.menuAction = action;
        if (action === "delete") item.classList.add("is-danger");
        item.append(icon(iconName), document.createTextNode(label));
        return item;
      }),
    );
    this.menu.dataset.conversationId = conversation.id;
    this.menuOpener = opener;
    opener.setAttribute("aria-expanded", "true");
    this.menu.hidden = false;
    const box = opener.getBoundingClientRect();
    const top = Math.min(box.bottom + 4, window.innerHeight - this.menu.offsetHeight - 8);
    this.menu.style.top = `${Math.max(8, top)}px`;
    this.menu.style.left = `${Math.max(8, Math.min(box.left, window.innerWidth - this.menu.offsetWidth - 8))}px`;
    /** @type {HTMLElement | null} */ (this.menu.querySelector("[role=menuitem]"))?.focus();
  }

  /** @param {boolean} restoreFocus */
  #closeMenu(restoreFocus) {
    if (this.menu.hidden) return;
    this.menu.hidden = true;
    this.menuOpener?.setAttribute("aria-expanded", "false");
    if (restoreFocus) this.menuOpener?.focus();
  }

  /** @param {string} action */
  #menuAction(action) {
    const conversation = this.get(this.menu.dataset.conversationId ?? "");
    this.#closeMenu(false);
    if (!conversation) return;
    const id = conversation.id;
    if (action === "rename") this.#startRename(conversation);
    else if (action === "pin") this.#sendOrWarn({ type: "conversation.pin", conversation: id, pinned: !conversation.pinned });
    else if (action === "archive")
      this.#sendOrWarn({ type: "conversation.archive", conversation: id, archived: !conversation.archived });
    else if (action === "delete") this.options.askDelete(conversation);
  }

  /** @param {Record<string, unknown>} frame */
  #sendOrWarn(frame) {
    if (!this.options.send(frame)) this.options.notify(gettext("Not connected: try again in a moment."));
  }

  /**
   * Swap the title for a text field: Enter or leaving the field saves, Escape cancels.
   * @param {Conversation} conversation
   */
  #startRename(conversation) {
    const item = this.list.querySelector(`[data-conversation-id="${CSS.escape(conversation.id)}"]`);
    const link = item?.querySelector(".conversation-link");
    if (!item || !link) return;
    const input = document.createElement("input");
    input.className = "conversation-rename";
    input.value = conversation.title;
    input.maxLength = 200;
    input.setAttribute("aria-label", gettext("New name for this chat"));
    let done = false;
    /** @param {boolean} save */
    const finish = (save) => {
      if (done) return;
      done = true;
      const title = input.value.trim();
      if (save && title && title !== conversation.title) {
        this.#sendOrWarn({ type: "conversation.rename", conversation: conversation.id, title });
        conversation.title = title; // shown at once; the server's update confirms it
      }
      this.render();
      /** @type {HTMLElement | null} */ (
        this.list.querySelector(`[data-conversation-id="${CSS.escape(conversation.id)}"] .conversation-link`)
      )?.focus();
    };
    input.addEventListener("keydown", (event) => {
      if (event.key === "Enter") {
        event.preventDefault();
        finish(true);
      } else if (event.key === "Escape") {
        event.preventDefault();
        event.stopPropagation();
        finish(false);
      }
    });
    input.addEventListener("blur", () => finish(true));
    link.replaceWith(input);
    input.focus();
    input.select();
  }
}

/**
 * @param {Conversation} a
 * @param {Conversation} b
 */
function byPinnedThenRecent(a, b) {
  if (a.pinned !== b.pinned) return a.pinned ? -1 : 1;
  return Date.parse(b.updated_at) - Date.parse(a.updated_at);
}

/**
 * @param {Conversation[]} conversations   already in list order
 * @returns {{label: string, items: Conversation[]}[]}
 */
function groupByDate(conversations) {
  const midnight = new Date();
  midnight.setHours(0, 0, 0, 0);
  const today = midnight.getTime();
  const groups = [
    { label: gettext("Pinned"), items: /** @type {Conversation[]} */ ([]), after: Number.POSITIVE_INFINITY },
    { label: gettext("Today"), items: [], after: today },
    { label: gettext("Yesterday"), items: [], after: today - DAY_MS },
    { label: gettext("Previous 7 days"), items: [], after: today - 7 * DAY_MS },
    { label: gettext("Previous 30 days"), items: [], after: today - 30 * DAY_MS },
    { label: gettext("Older"), items: [], after: Number.NEGATIVE_INFINITY },
  ];
  for (const conversation of conversations) {
    const time = Date.parse(conversation.updated_at);
    const group = conversation.pinned ? groups[0] : groups.slice(1).find((candidate) => time >= candidate.after);
    (group ?? groups[groups.length - 1]).items.push(conversation);
  }
  return groups;
}
