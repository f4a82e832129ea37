// Theme and the small pieces of page chrome base.html needs.
// Loaded in <head> without defer: the saved theme is applied before the first paint (no flash).
// With nothing saved, the CSS follows prefers-color-scheme.
(() => {
  const KEY = "djinn-theme";
  const root = document.documentElement;
  const darkQuery = window.matchMedia("(prefers-color-scheme: dark)");

  const saved = () => {
    try {
      return localStorage.getItem(KEY);
    } catch {
      return null; // storage blocked (private mode, policy): follow the system
    }
  };
  const apply = (theme) => {
    if (theme === "light" || theme === "dark") root.dataset.theme = theme;
    else delete root.dataset.theme;
  };
  const current = () => root.dataset.theme || (darkQuery.matches ? "dark" : "light");

  apply(saved());

  const syncToggles = () => {
    for (const button of document.querySelectorAll("[data-theme-toggle]")) {
      button.setAttribute("aria-pressed", String(current() === "dark"));
    }
  };

  document.addEventListener("DOMContentLoaded", () => {
    syncToggles();
    darkQuery.addEventListener("change", syncToggles);
    for (const button of document.querySelectorAll("[data-theme-toggle]")) {
      button.addEventListener("click", () => {
        const next = current() === "dark" ? "light" : "dark";
        apply(next);
        try {
          localStorage.setItem(KEY, next);
        } catch {
          // not remembered, but still switched for this page
        }
        syncToggles();
      });
    }

    // Toasts: closable; success and info fade away on their own, warnings and errors stay.
    for (const toast of document.querySelectorAll("[data-toast]")) {
      toast.querySelector("[data-toast-close]")?.addEventListener("click", () => toast.remove());
      if (toast.matches(".toast-success, .toast-info")) {
        setTimeout(() => toast.classList.add("toast-leaving"), 6000);
        toast.addEventListener("animationend", (event) => {
          if (event.animationName === "toast-out") toast.remove();
        });
      }
    }

    // The account menu is a <details>: close it on Escape or a click elsewhere.
    for (const menu of document.querySelectorAll("[data-menu]")) {
      document.addEventListener("click", (event) => {
        if (!menu.contains(event.target)) menu.open = false;
      });
      menu.addEventListener("keydown", (event) => {
        if (event.key === "Escape" && menu.open) {
          menu.open = false;
          menu.querySelector("summary")?.focus();
        }
      });
    }

    // A form came back with errors: move focus to the summary so it is read first.
    document.querySelector("[data-error-summary]")?.focus();
  });
})();
