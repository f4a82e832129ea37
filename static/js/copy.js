// Copy buttons: <button data-copy="ID"> copies the text of the element with that id.
// Without JavaScript (or clipboard access) the text stays selectable by hand. gettext() comes from the
// translation catalog that base.html loads before every other script.
(() => {
  document.addEventListener("DOMContentLoaded", () => {
    for (const button of document.querySelectorAll("[data-copy]")) {
      button.hidden = !navigator.clipboard;
      button.addEventListener("click", async () => {
        const source = document.getElementById(button.dataset.copy || "");
        if (!source) return;
        const label = button.textContent;
        try {
          await navigator.clipboard.writeText(source.textContent || "");
          button.textContent = gettext("Copied");
        } catch {
          button.textContent = gettext("Select and copy by hand");
        }
        setTimeout(() => (button.textContent = label), 2000);
      });
    }
  });
})();
