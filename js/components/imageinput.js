// Image drop zone + file picker for one url/url_list param. Files go to the kernel as binary
// buffers (never base64 in widget state); the kernel uploads them and lists them in `inputs`.

import { button } from "./buttons.js";
import { fill, h } from "./dom.js";
import { humanize } from "./format.js";

/**
 * @param name, spec  the route param (type "url" or "url_list")
 * @param handlers    { onFiles(name, File[]), onRemove(index, name), accept: "image/png,…" }
 */
export function createImageInput(name, spec, { onFiles, onRemove, accept = "image/*" }) {
  const multiple = spec.type === "url_list";
  const file = h("input", {
    type: "file", accept, multiple, hidden: true, "data-param": name, testid: "image-input",
    onchange: () => {
      const files = [...file.files];
      file.value = ""; // picking the same file again must fire change again
      if (files.length) onFiles(name, files);
    },
  });
  const label = `${humanize(name)}${spec.required ? "" : " (optional)"}`;
  const pick = button(multiple ? "Choose images…" : "Choose image…", { onclick: () => file.click(), "aria-label": `Choose ${label}` });
  const thumbs = h("ul", { class: "ssw-thumbs", "aria-label": `${label}: attached images` });
  const hint = h("span", { class: "ssw-muted" }, "or drop here");
  const zone = h("div", { class: "ssw-drop", testid: "drop-zone", "data-param-group": name }, thumbs, pick, hint, file);
  // Why a file was not taken (its type, too many files, the kernel's refusal of an upload or removal).
  const note = h("p", { class: "ssw-action-error", role: "alert", testid: "input-error", hidden: true });
  const node = h("div", { class: "ssw-field ssw-field--wide" },
    h("span", { class: "ssw-field__label" }, label),
    spec.description && h("small", { class: "ssw-muted" }, spec.description),
    zone, note,
  );

  zone.addEventListener("dragover", (e) => {
    e.preventDefault();
    zone.classList.add("ssw-drop--over");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("ssw-drop--over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("ssw-drop--over");
    const files = [...(e.dataTransfer?.files ?? [])];
    if (files.length) onFiles(name, multiple ? files : files.slice(0, 1));
  });

  return {
    node,
    /** items: [{ name, status, thumb, index? (position in `inputs`), pending? }] */
    set(items) {
      thumbs.replaceChildren(
        ...items.map((it) => h("li", { class: `ssw-thumb ssw-thumb--${it.status}`, testid: "input-thumb", "data-status": it.status },
          it.thumb ? h("img", { src: it.thumb, alt: "" }) : h("span", { class: "ssw-thumb__blank", "aria-hidden": "true" }),
          h("span", { class: "ssw-thumb__name", title: it.name }, it.name),
          h("span", { class: "ssw-muted" }, it.pending ? "sending…" : it.status),
          it.index != null && button("×", { class: "ssw-btn ssw-btn--icon", "aria-label": `Remove ${it.name}`, testid: "remove-input", onclick: () => onRemove(it.index, name) }),
        )),
      );
      const full = !multiple ? items.length >= 1 : spec.max_items != null && items.length >= spec.max_items;
      pick.disabled = full;
      hint.hidden = full;
    },
    /** Show (or, with "", clear) why a file was not taken. */
    notice(text) {
      fill(note, text);
    },
  };
}
