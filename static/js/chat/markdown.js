// Markdown to safe DOM: marked parses, DOMPurify sanitises against an allow-list, highlight.js colours
// code, KaTeX typesets math. What a model writes is untrusted: no script, no event handler, no javascript:
// URL, no style attribute and no remote fetch (images become links) ever reaches the page.
//
// Math ($...$, $$...$$, \(...\), \[...\], ```math) leaves marked as a code element of class language-math-*
// holding the TeX as text, goes through DOMPurify like the rest, and is then typeset by KaTeX from that
// text (trust off: no \href, \url or \html*); KaTeX itself is loaded the first time math appears.
// A table column's alignment is marked's align attribute, which the stylesheet honours; a task list's box
// is a disabled checkbox, the only input allowed.

import { Marked } from "../../vendor/marked/marked.esm.js";
import DOMPurify from "../../vendor/dompurify/purify.es.mjs";
import hljs from "../../vendor/highlight/highlight.min.js";

/**
 * KaTeX (600 kB) is fetched the first time a reply holds math, not with every chat page.
 * @type {typeof import("../../vendor/katex/katex.mjs").default | null}
 */
let katex = null;
/** @type {Promise<void> | null} */
let katexLoading = null;

/** Load KaTeX once, then typeset the math already on the page. */
function loadKatex() {
  katexLoading ??= import("../../vendor/katex/katex.mjs").then((module) => {
    katex = module.default;
    for (const code of document.querySelectorAll(MATH)) typeset(/** @type {HTMLElement} */ (code));
  });
  return katexLoading;
}

const ALLOWED_TAGS = [
  "a", "b", "blockquote", "br", "code", "del", "em", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "i",
  "input", "li", "ol", "p", "pre", "s", "strong", "sub", "sup", "table", "tbody", "td", "th", "thead", "tr",
  "ul",
];
const ALLOWED_ATTR = ["href", "title", "class", "start", "align", "type", "checked", "disabled"];
const ALIGNMENTS = new Set(["left", "center", "right"]);
const MATH = "code.language-math, code.language-math-display, code.language-math-inline";
// A block: $$...$$ or \[...\] alone. Inline: $$...$$, \(...\), or $...$ where the opening $ is followed and
// the closing $ preceded by a non-space, and no digit follows it (so "$5 and $10" stays money, not math).
const BLOCK_MATH = /^ {0,3}(?:\$\$([\s\S]+?)\$\$|\\\[([\s\S]+?)\\\])[ \t]*(?:\n+|$)/;
const INLINE_MATH = /^(?:\$\$((?:\\.|[^$\\])+?)\$\$|\\\(([\s\S]+?)\\\)|\$(?![\s$])((?:\\.|[^$\n\\])+?)(?<![\s\\])\$(?!\d))/;
// Only these link targets survive; relative and data: URLs are dropped with the rest.
const SAFE_URL = /^(?:https?:|mailto:)/i;
const CODE_CLASS = /^language-[\w#+.-]{1,40}$/;

/** @param {string} text */
export function escapeHtml(text) {
  return text
    .replaceAll("&", "&amp;")
    .replaceAll("<", "&lt;")
    .replaceAll(">", "&gt;")
    .replaceAll('"', "&quot;")
    .replaceAll("'", "&#39;");
}

/** @param {string} tex @param {boolean} display */
function mathCode(tex, display) {
  return `<code class="language-math-${display ? "display" : "inline"}">${escapeHtml(tex.trim())}</code>`;
}

const marked = new Marked({
  extensions: [
    {
      name: "mathBlock",
      level: "block",
      start: (src) => src.match(/\$\$|\\\[/)?.index,
      tokenizer(src) {
        const match = BLOCK_MATH.exec(src);
        if (match) return { type: "mathBlock", raw: match[0], text: match[1] ?? match[2] };
        return undefined;
      },
      renderer: (token) => `<pre>${mathCode(token.text, true)}</pre>`,
    },
    {
      name: "mathInline",
      level: "inline",
      start: (src) => src.match(/\$|\\\(/)?.index,
      tokenizer(src) {
        const match = INLINE_MATH.exec(src);
        if (match) return { type: "mathInline", raw: match[0], text: match[1] ?? match[2] ?? match[3], display: match[1] !== undefined };
        return undefined;
      },
      renderer: (token) => mathCode(token.text, token.display),
    },
  ],
  gfm: true,
  breaks: true,
  async: false,
  renderer: {
    // Raw HTML in a reply is shown as text, as a chat should (DOMPurify would strip it anyway).
    html(token) {
      return escapeHtml(token.text);
    },
    // No image is ever loaded: a link to it keeps the information without a request.
    image(token) {
      const label = token.text || token.href;
      return `<a href="${escapeHtml(token.href)}" class="md-image">${escapeHtml(label)}</a>`;
    },
  },
});

DOMPurify.addHook("uponSanitizeAttribute", (_node, data) => {
  if (data.attrName === "class" && !CODE_CLASS.test(data.attrValue)) data.keepAttr = false;
});
DOMPurify.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName === "A" && node.hasAttribute("href")) {
    node.setAttribute("target", "_blank");
    node.setAttribute("rel", "noopener noreferrer nofollow");
  }
  // A task list's box: a checkbox that shows, never a control (nothing else may be an input).
  if (node.tagName === "INPUT") {
    if (node.getAttribute("type") === "checkbox" && node.parentElement?.tagName === "LI") {
      node.setAttribute("disabled", "");
      node.parentElement.classList.add("task-item");
    } else {
      node.remove();
    }
  }
  if (node.hasAttribute("align") && !(ALIGNMENTS.has(node.getAttribute("align") ?? "") && /^T[HD]$/.test(node.tagName))) {
    node.removeAttribute("align");
  }
  if (node.hasAttribute("type") && node.tagName !== "INPUT") node.removeAttribute("type");
});

hljs.configure({ ignoreUnescapedHTML: true });

/**
 * Sanitised DOM for a Markdown string.
 * @param {string} source
 * @returns {DocumentFragment}
 */
export function renderMarkdown(source) {
  const html = /** @type {string} */ (marked.parse(source));
  const fragment = DOMPurify.sanitize(html, {
    ALLOWED_TAGS,
    ALLOWED_ATTR,
    ALLOWED_URI_REGEXP: SAFE_URL,
    // Plain values, not URLs: without this DOMPurify holds them to SAFE_URL too, and drops every one.
    ADD_URI_SAFE_ATTR: ["align", "start", "type"],
    ALLOW_DATA_ATTR: false,
    ALLOW_ARIA_ATTR: false,
    RETURN_DOM_FRAGMENT: true,
  });
  for (const code of fragment.querySelectorAll(MATH)) typeset(/** @type {HTMLElement} */ (code));
  for (const code of fragment.querySelectorAll("pre > code")) decorateCodeBlock(/** @type {HTMLElement} */ (code));
  return fragment;
}

/**
 * Replace a math code element by KaTeX's rendering of its text. TeX KaTeX cannot parse stays as code, with
 * the reason as its title (KaTeX's own error display would need an inline style).
 * @param {HTMLElement} code
 */
function typeset(code) {
  if (katex === null) {
    loadKatex(); // the code element stays until then (its TeX as text)
    return;
  }
  const display = !code.classList.contains("language-math-inline");
  const target = document.createElement(display ? "div" : "span");
  target.className = display ? "math math-display" : "math math-inline";
  try {
    katex.render(code.textContent ?? "", target, {
      displayMode: display,
      throwOnError: true,
      trust: false,
      strict: "ignore",
      maxSize: 20,
      maxExpand: 500,
    });
  } catch (error) {
    code.classList.add("math-error");
    code.title = error instanceof Error ? error.message : String(error);
    return;
  }
  const pre = code.parentElement?.tagName === "PRE" ? code.parentElement : null;
  (display && pre ? pre : code).replaceWith(target);
}

/**
 * Highlight a code block (highlight.js reads textContent and writes escaped spans) and give it a header
 * with its language and a copy button.
 * @param {HTMLElement} code
 */
function decorateCodeBlock(code) {
  const pre = /** @type {HTMLElement} */ (code.parentElement);
  const language = [...code.classList].find((name) => name.startsWith("language-"))?.slice("language-".length) ?? "";
  if (language && hljs.getLanguage(language)) hljs.highlightElement(code);

  const block = document.createElement("div");
  block.className = "code-block";
  const header = document.createElement("div");
  header.className = "code-header";
  const label = document.createElement("span");
  label.textContent = language || "text";
  const copy = document.createElement("button");
  copy.type = "button";
  copy.className = "code-copy";
  copy.dataset.action = "copy-code";
  copy.textContent = gettext("Copy");
  copy.setAttribute("aria-label", language ? interpolate(gettext("Copy %(language)s"), { language }, true) : gettext("Copy code"));
  header.append(label, copy);
  pre.replaceWith(block);
  block.append(header, pre);
}
