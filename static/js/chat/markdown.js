// Markdown to safe DOM: marked parses, DOMPurify sanitises against an allow-list, highlight.js colours
// code. What a model writes is untrusted: no script, no event handler, no javascript: URL, no style and
// no remote fetch (images become links) ever reaches the page.

import { Marked } from "../../vendor/marked/marked.esm.js";
import DOMPurify from "../../vendor/dompurify/purify.es.mjs";
import hljs from "../../vendor/highlight/highlight.min.js";

const ALLOWED_TAGS = [
  "a", "b", "blockquote", "br", "code", "del", "em", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "i",
  "li", "ol", "p", "pre", "s", "strong", "sub", "sup", "table", "tbody", "td", "th", "thead", "tr", "ul",
];
const ALLOWED_ATTR = ["href", "title", "class", "start", "align"];
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

const marked = new Marked({
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
    ALLOW_DATA_ATTR: false,
    ALLOW_ARIA_ATTR: false,
    RETURN_DOM_FRAGMENT: true,
  });
  for (const code of fragment.querySelectorAll("pre > code")) decorateCodeBlock(/** @type {HTMLElement} */ (code));
  return fragment;
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
  copy.textContent = "Copy";
  copy.setAttribute("aria-label", `Copy ${language || "code"}`);
  header.append(label, copy);
  pre.replaceWith(block);
  block.append(header, pre);
}
