// Stroke icons (24×24, the same style as base.html's), built as DOM so no markup string is parsed.

const PATHS = {
  copy: ["M9 9h10v10H9z", "M5 15V5h10"],
  "thumb-up": ["M7 11v9H4v-9z", "M7 11l4-7a2 2 0 0 1 3 2l-1 4h5a2 2 0 0 1 2 2.3l-1.2 6A2 2 0 0 1 16.8 20H7"],
  "thumb-down": ["M7 13V4H4v9z", "M7 13l4 7a2 2 0 0 0 3-2l-1-4h5a2 2 0 0 0 2-2.3l-1.2-6A2 2 0 0 0 16.8 4H7"],
  check: ["m5 12 5 5 9-10"],
  edit: ["M4 20h4L19 9l-4-4L4 16v4Z", "m13.5 6.5 4 4"],
  regenerate: ["M20 11a8 8 0 1 0-2.3 5.7", "M20 5v6h-6"],
  left: ["m14 6-6 6 6 6"],
  right: ["m10 6 6 6-6 6"],
  more: ["M5 12h.01", "M12 12h.01", "M19 12h.01"],
  pin: ["M9 4h6l-1 6 4 4H6l4-4-1-6Z", "M12 14v6"],
  archive: ["M4 5h16v4H4z", "M6 9v10h12V9", "M10 13h4"],
  trash: ["M4 7h16", "M10 11v6M14 11v6", "M6 7l1 13h10l1-13", "M9 7V4h6v3"],
  rename: ["M4 20h16", "M14 5l3 3-8 8H6v-3l8-8Z"],
};

/** @typedef {keyof typeof PATHS} IconName */

const SVG = "http://www.w3.org/2000/svg";

/**
 * @param {IconName} name
 * @returns {SVGSVGElement}
 */
export function icon(name) {
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("class", `icon icon-${name}`);
  svg.setAttribute("aria-hidden", "true");
  for (const d of PATHS[name]) {
    const path = document.createElementNS(SVG, "path");
    path.setAttribute("d", d);
    svg.append(path);
  }
  return svg;
}

/**
 * A small button with an icon and an accessible name (also its tooltip).
 * @param {IconName} name
 * @param {string} label
 * @param {string} action   read by the click handler through data-action
 */
export function iconButton(name, label, action) {
  const button = document.createElement("button");
  button.type = "button";
  button.className = "action-button";
  button.dataset.action = action;
  button.setAttribute("aria-label", label);
  button.title = label;
  button.append(icon(name));
  return button;
}
