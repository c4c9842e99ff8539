// Buttons and the "copy URL" action (clipboard API with a select-the-text fallback:
// the clipboard needs a secure context and focus, which notebook hosts do not always give).

import { h } from "./dom.js";

export function button(label, props = {}) {
  return h("button", { type: "button", class: "ssw-btn", ...props }, label);
}

export function copyButton(getText, { onCopied } = {}) {
  let fallback = null; // made on first need: most cards never need it
  const btn = button("Copy URL", {
    testid: "copy-url",
    onclick: async () => {
      const text = getText();
      try {
        await navigator.clipboard.writeText(text);
        btn.textContent = "Copied";
        onCopied?.(true);
        setTimeout(() => (btn.textContent = "Copy URL"), 1500);
      } catch {
        // No clipboard access: show the URL selected so Ctrl/Cmd+C copies it.
        fallback ??= h("input", { class: "ssw-copy-fallback", readOnly: true, "aria-label": "URL to copy", testid: "copy-fallback" });
        btn.after(fallback);
        fallback.value = text;
        fallback.hidden = false;
        fallback.focus();
        fallback.select();
        onCopied?.(false);
      }
    },
  });
  return btn;
}
