// Lightbox for completed images. A <dialog> opened with showModal() renders in the browser's
// top layer, so it escapes the notebook cell's overflow and containment; where showModal is
// missing (older hosts, jsdom) it falls back to a fixed overlay.
// Keys: Escape closes, ArrowLeft/ArrowRight move. Handled keys stop propagating and the
// dialog carries data-lm-suppress-shortcuts, so JupyterLab's command-mode shortcuts
// (arrows select cells, Escape leaves edit mode) do not fire underneath.

import "../css/lightbox.css";
import { button } from "./buttons.js";
import { h, modal } from "./dom.js";

export function createLightbox() {
  const img = h("img", { class: "ssw-lightbox__img", alt: "", testid: "lightbox-image" });
  const caption = h("p", { class: "ssw-lightbox__caption" });
  const counter = h("span", { class: "ssw-lightbox__counter", "aria-live": "polite" });
  const prev = button("‹ Prev", { "aria-label": "Previous image", testid: "lightbox-prev", onclick: () => move(-1) });
  const next = button("Next ›", { "aria-label": "Next image", testid: "lightbox-next", onclick: () => move(1) });
  const closeBtn = button("Close", { testid: "lightbox-close", onclick: () => close() });
  const node = h("dialog", { class: "ssw-lightbox", testid: "lightbox", "aria-label": "Image viewer", "data-lm-suppress-shortcuts": "true" },
    h("figure", { class: "ssw-lightbox__frame" }, img, h("figcaption", {}, caption, h("div", { class: "ssw-lightbox__controls" }, prev, counter, next, closeBtn))),
  );
  let items = [];
  let index = 0;
  const box = modal(node);

  function show(i) {
    index = (i + items.length) % items.length;
    const item = items[index];
    img.src = item.url;
    img.alt = item.caption || "generated image";
    caption.textContent = item.caption || "";
    counter.textContent = items.length > 1 ? `${index + 1} / ${items.length}` : "";
    prev.disabled = next.disabled = items.length < 2;
  }

  function move(delta) {
    if (items.length) show(index + delta);
  }

  /** items: [{ key, url, caption }] */
  function open(list, startIndex = 0) {
    if (!list.length) return;
    items = list;
    show(startIndex);
    box.show(closeBtn);
  }

  const close = () => box.hide();

  node.addEventListener("keydown", (e) => {
    const actions = { Escape: close, ArrowLeft: () => move(-1), ArrowRight: () => move(1) };
    const act = actions[e.key];
    if (!act) return;
    e.preventDefault();
    e.stopPropagation();
    act();
  });


  return {
    node,
    open,
    close,
    get isOpen() {
      return node.open;
    },
    get index() {
      return index;
    },
  };
}
