// Parameter form generated from a route's params: prompt -> textarea, enum -> <select> with only
// the allowed values, boolean -> checkbox, integer/number -> number field within its bounds,
// url/url_list -> image drop zone, anything else -> text.
// Every control carries data-param="<name>".

import "../css/form.css";
import { formParams, isImageParam, isRequired } from "./catalog.js";
import { h } from "./dom.js";
import { humanize } from "./format.js";
import { createImageInput } from "./imageinput.js";

const suppress = { "data-lm-suppress-shortcuts": "true" }; // arrow keys in a select must not move notebook cells

/** handlers: { onPrompt(text, commit), onParam(name, value), onFiles(name, files), onRemove(index, name), accept } */
export function createParamForm(handlers) {
  // The prompt box survives route changes, so switching model never loses what was typed.
  const prompt = h("textarea", {
    rows: 3, "data-param": "prompt", testid: "prompt", placeholder: "Describe what to generate",
    oninput: () => handlers.onPrompt(prompt.value, false),
    onchange: () => handlers.onPrompt(prompt.value, true), // on blur: save now
  });
  const promptField = h("label", { class: "ssw-field ssw-field--wide" }, h("span", { class: "ssw-field__label" }, "Prompt"), prompt);
  const images = h("div", { class: "ssw-form__images" });
  const controls = h("div", { class: "ssw-form__controls" });
  const node = h("div", { class: "ssw-form", testid: "param-form" }, promptField, images, controls);
  const fields = new Map(); // name -> control element
  const imageInputs = new Map(); // name -> image input

  function control(name, spec) {
    const title = spec.description || null;
    if (spec.type === "enum") {
      const select = h("select", { "data-param": name, title, ...suppress, onchange: () => handlers.onParam(name, select.value) },
        !spec.required && spec.default == null && h("option", { value: "" }, "(default)"),
        (spec.values ?? []).map((v) => h("option", { value: String(v) }, String(v))),
      );
      return [select, h("label", { class: "ssw-field" }, h("span", { class: "ssw-field__label" }, humanize(name)), select)];
    }
    if (spec.type === "boolean") {
      const box = h("input", { type: "checkbox", "data-param": name, title, onchange: () => handlers.onParam(name, box.checked) });
      return [box, h("label", { class: "ssw-field ssw-field--check" }, box, h("span", {}, humanize(name)))];
    }
    if (spec.type === "integer" || spec.type === "number") {
      const box = h("input", {
        type: "number", "data-param": name, title, min: spec.minimum, max: spec.maximum,
        step: spec.type === "integer" ? 1 : "any", placeholder: spec.default == null ? "(default)" : null,
        onchange: () => handlers.onParam(name, box.value === "" ? "" : Number(box.value)),
      });
      return [box, h("label", { class: "ssw-field" }, h("span", { class: "ssw-field__label" }, humanize(name)), box)];
    }
    const text = h("input", { type: "text", "data-param": name, title, onchange: () => handlers.onParam(name, text.value) });
    return [text, h("label", { class: "ssw-field" }, h("span", { class: "ssw-field__label" }, humanize(name)), text)];
  }

  return {
    node,
    prompt,
    /** Rebuild the controls for a route and mode (only when those change). */
    build(route, mode) {
      fields.clear();
      imageInputs.clear();
      const imageNodes = [];
      const controlNodes = [];
      promptField.hidden = !route?.params?.prompt;
      if (route?.params?.prompt?.max_length) prompt.maxLength = route.params.prompt.max_length;
      for (const [name, spec] of formParams(route, mode)) {
        if (isImageParam(spec)) {
          const input = createImageInput(name, { ...spec, required: isRequired(name, spec, mode) }, handlers);
          imageInputs.set(name, input);
          imageNodes.push(input.node);
        } else {
          const [el, field] = control(name, spec);
          fields.set(name, el);
          controlNodes.push(field);
        }
      }
      images.replaceChildren(...imageNodes);
      controls.replaceChildren(...controlNodes);
    },
    /** Show trait values without stealing the caret from a control being edited (promptText undefined: leave it). */
    setValues(params = {}, promptText = undefined) {
      if (promptText !== undefined && prompt.value !== promptText && document.activeElement !== prompt) prompt.value = promptText;
      for (const [name, el] of fields) {
        const v = params[name];
        if (el.type === "checkbox") el.checked = !!v;
        else if (document.activeElement !== el || el.tagName === "SELECT") el.value = v == null ? "" : String(v);
      }
    },
    /** itemsByParam: { name: [{ name, status, thumb, index?, pending? }] } */
    setInputs(itemsByParam) {
      for (const [name, input] of imageInputs) input.set(itemsByParam[name] ?? []);
    },
    /** Say at an image param's drop zone why a file was not taken ("" clears it). */
    notice(name, text) {
      imageInputs.get(name)?.notice(text);
    },
  };
}
