// Route-table logic (pure functions over the `catalog` trait: catalog/routes.json, or the
// service's live route table in the same shape, which may bring models and operations this file
// has never heard of).

import { formatTypical, formatUsdRange, humanize } from "./format.js";

export const MODES = ["generate", "edit", "i2v"];
const IMAGE_TYPES = new Set(["url", "url_list"]);
const NAMED_OPS = new Set(["generate", "t2v", "edit", "i2v"]);

export const isImageParam = (spec) => IMAGE_TYPES.has(spec?.type);

const routesOf = (catalog, model) => (catalog?.routes ?? []).filter((r) => r.model === model);

/**
 * The route a model uses in a mode:
 *   generate -> the "generate" route, else "t2v"
 *   edit     -> the "edit" route
 *   i2v      -> the "i2v" route, else the "generate" route when it takes an `image` (Veo, Grok Video)
 *   other    -> the route of that operation ("vectorize", or whatever the service adds)
 */
export function routeFor(catalog, model, mode) {
  const routes = routesOf(catalog, model);
  const op = (name) => routes.find((r) => r.operation === name);
  if (mode === "edit") return op("edit") ?? null;
  if (mode === "i2v") return op("i2v") ?? (op("generate")?.params?.image ? op("generate") : null);
  if (mode && !NAMED_OPS.has(mode)) return op(mode) ?? null;
  return op("generate") ?? op("t2v") ?? null;
}

/** The modes of a model: the known ones it supports, then its other operations by name. */
export function modesFor(catalog, model) {
  const others = routesOf(catalog, model).map((r) => r.operation).filter((op) => !NAMED_OPS.has(op));
  return [...MODES.filter((mode) => routeFor(catalog, model, mode)), ...new Set(others)];
}

export function modeLabel(mode, media) {
  if (mode === "edit") return "Edit images";
  if (mode === "i2v") return "Image to video";
  if (mode === "vectorize") return "Image to SVG";
  if (mode && mode !== "generate") return humanize(mode);
  return media === "video" ? "Text to video" : "Text to image";
}

/** Models in catalog order, grouped by media: [{ media, label, models: [{ model, label, text, description }] }]. */
export function modelGroups(catalog) {
  const groups = new Map([["image", []], ["video", []]]);
  const seen = new Set();
  for (const r of catalog?.routes ?? []) {
    if (seen.has(r.model)) continue;
    seen.add(r.model);
    const main = routeFor(catalog, r.model, modesFor(catalog, r.model)[0]) ?? r;
    const media = main.media ?? "image";
    if (!groups.has(media)) groups.set(media, []);
    const typical = formatTypical(main.typical_s, main.typical_range_s);
    groups.get(media).push({
      model: r.model,
      label: main.label ?? r.model,
      // "Nano Banana — $0.039 · ~5 s"
      text: [`${main.label ?? r.model} — ${formatUsdRange(main.price_usd)}`, typical].filter(Boolean).join(" · "),
      description: main.description ?? "",
    });
  }
  return [...groups]
    .filter(([, models]) => models.length)
    .map(([media, models]) => ({ media, label: media.charAt(0).toUpperCase() + media.slice(1), models }));
}

/** Params shown in the form for a route and mode: image params only outside "generate". */
export function formParams(route, mode) {
  return Object.entries(route?.params ?? {}).filter(([name, spec]) => {
    if (name === "prompt") return false;
    if (isImageParam(spec)) return mode !== "generate";
    return true;
  });
}

/**
 * The wire params for a route: keep current values that are still valid, fill defaults (a
 * required choice without one starts at its first value), drop what the route does not take.
 * Enums are strings, booleans are booleans, integers and numbers are numbers.
 */
export function normalizeParams(route, current = {}) {
  const out = {};
  for (const [name, spec] of Object.entries(route?.params ?? {})) {
    if (name === "prompt" || isImageParam(spec)) continue;
    const value = current?.[name];
    if (spec.type === "enum") {
      const values = (spec.values ?? []).map(String);
      if (value != null && values.includes(String(value))) out[name] = String(value);
      else if (spec.default != null) out[name] = String(spec.default);
      else if (spec.required && values.length) out[name] = values[0];
    } else if (spec.type === "integer" || spec.type === "number") {
      const n = value === "" || value == null ? NaN : Number(value);
      const fits = Number.isFinite(n) && (spec.type === "number" || Number.isInteger(n))
        && !(spec.minimum != null && n < spec.minimum) && !(spec.maximum != null && n > spec.maximum);
      if (fits) out[name] = n;
      else if (spec.default != null) out[name] = spec.default;
    } else if (spec.type === "boolean") {
      if (typeof value === "boolean") out[name] = value;
      else if (value === "true" || value === "false") out[name] = value === "true";
      else if (spec.default != null) out[name] = !!spec.default;
    } else if (value != null && value !== "") out[name] = value;
    else if (spec.default != null) out[name] = spec.default;
  }
  return out;
}

/** Which inputs feed which image param: explicit input.param first, then the empty single-image
 *  slots in order, then the list (images, referenceImages), if there is one. */
export function assignInputs(route, mode, inputs = []) {
  const params = formParams(route, mode).filter(([, spec]) => isImageParam(spec));
  const byParam = Object.fromEntries(params.map(([name]) => [name, []]));
  const rest = [];
  inputs.forEach((input, index) => {
    const item = { ...input, index };
    if (input.param && byParam[input.param]) byParam[input.param].push(item);
    else rest.push(item);
  });
  for (const [name, spec] of params) {
    if (rest.length && spec.type !== "url_list" && byParam[name].length === 0) byParam[name].push(rest.shift());
  }
  const list = params.find(([, spec]) => spec.type === "url_list");
  if (rest.length && (list || params.length)) byParam[(list ?? params[0])[0]].push(...rest);
  return byParam;
}

/** Image-to-video needs its first frame, even on routes where `image` is optional (Veo, Grok Video). */
export function isRequired(name, spec, mode) {
  return !!spec?.required || (mode === "i2v" && name === "image");
}

/** The first reason the form cannot be sent yet, or "" when it can. */
export function missingInputs(route, mode, inputs = []) {
  const assigned = assignInputs(route, mode, inputs);
  for (const [name, spec] of formParams(route, mode)) {
    if (!isImageParam(spec)) continue;
    const items = assigned[name] ?? [];
    const ok = items.filter((i) => i.status !== "error");
    const required = isRequired(name, spec, mode);
    // An optional list may stay empty; once used it needs its minimum.
    const min = spec.type === "url_list" && (required || ok.length) ? Math.max(spec.min_items ?? 1, 1) : required ? 1 : 0;
    if (ok.length < min) return spec.type === "url_list" ? `Add at least ${min} image${min === 1 ? "" : "s"}` : `Add an image: ${humanize(name)}`;
    if (spec.max_items && ok.length > spec.max_items) return `At most ${spec.max_items} images`;
    if (spec.requires && ok.length && !(assigned[spec.requires] ?? []).some((i) => i.status !== "error")) {
      return `${humanize(name)} needs ${humanize(spec.requires).toLowerCase()} too`;
    }
    if (items.some((i) => i.status === "uploading")) return "Uploading images…";
    if (items.some((i) => i.status === "error")) return "Remove the image that failed to upload";
  }
  return "";
}
