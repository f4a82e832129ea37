// A shared chat (/s/<token>/): its replies are Markdown, rendered and sanitised as in the chat, with working
// copy buttons on code blocks. The page is read-only: nothing else here talks to the server.

import { renderMarkdown } from "./markdown.js";

for (const body of /** @type {NodeListOf<HTMLElement>} */ (document.querySelectorAll("[data-markdown]"))) {
  const source = body.textContent ?? "";
  body.classList.add("markdown");
  body.replaceChildren(renderMarkdown(source));
}

document.addEventListener("click", async (event) => {
  const button = /** @type {HTMLElement} */ (event.target).closest("[data-action=copy-code]");
  if (!button) return;
  const text = button.closest(".code-block")?.querySelector("code")?.textContent ?? "";
  try {
    await navigator.clipboard.writeText(text);
    button.textContent = gettext("Copied");
  } catch {
    button.textContent = gettext("Select and copy by hand");
  }
  window.setTimeout(() => (button.textContent = gettext("Copy")), 2000);
});
