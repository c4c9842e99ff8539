import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { assignInputs, missingInputs, modelGroups, normalizeParams, routeFor } from "../components/catalog.js";
import { formatElapsed, formatTypical, formatUsd, formatUsdRange, humanize, shortHash, STATUS_KINDS, statusKind, statusText } from "../components/format.js";
import vocabulary from "../../stablestudio_widgets/vocabulary.json";
import { loadCatalog } from "./helpers.js";

describe("format", () => {
  it.each([[0.039, "$0.039"], [0.13, "$0.13"], [1.6, "$1.60"], [3, "$3.00"], [0.011, "$0.011"], [0.0001, "$0.0001"], [null, "—"], ["x", "—"]])(
    "formatUsd(%s) = %s", (v, out) => expect(formatUsd(v)).toBe(out));

  it("formats ranges, durations and hashes", () => {
    expect(formatUsdRange([0.039, 0.039])).toBe("$0.039");
    expect(formatUsdRange([0.13, 0.24])).toBe("$0.13–$0.24");
    expect(formatElapsed(12_400)).toBe("12 s");
    expect(formatElapsed(125_000)).toBe("2 min 05 s");
    expect(formatTypical(5)).toBe("~5 s");
    expect(formatTypical(120)).toBe("~2 min");
    expect(formatTypical(210, [120, 300])).toBe("~2–5 min");
    expect(shortHash("0x1234567890abcdef")).toBe("0x1234…cdef");
    expect(humanize("aspectRatio")).toBe("Aspect ratio");
    expect(humanize("generate_audio")).toBe("Generate audio");
  });

  it("takes each status's kind and label from the vocabulary", () => {
    for (const [status, { kind, label }] of Object.entries(vocabulary.job_status)) {
      expect(statusKind(status)).toBe(kind);
      expect(statusText(status)).toBe(label);
    }
    expect(statusKind("complete")).toBe("complete");
    expect(["failed", "timeout", "lost"].map(statusKind)).toEqual(["failed", "failed", "failed"]);
    expect(statusKind("awaiting_confirmation")).toBe("waiting");
    expect(statusKind("cancelled")).toBe("cancelled");
    expect(statusText("awaiting_confirmation")).toBe("waiting for your OK");
  });

  it("treats unknown statuses as running and shows them verbatim", () => {
    for (const status of ["in_queue", "constructor", "toString", "__proto__"]) {
      expect(statusKind(status)).toBe("running");
      expect(statusText(status)).toBe(status);
    }
    expect(statusText("")).toBe("unknown");
    expect(STATUS_KINDS).toEqual(["running", "waiting", "complete", "failed", "cancelled"]);
  });
});

describe("catalog helpers", () => {
  const catalog = loadCatalog();

  it("groups every model once", () => {
    const groups = modelGroups(catalog);
    const all = groups.flatMap((g) => g.models.map((m) => m.model));
    expect(new Set(all).size).toBe(all.length);
    expect(groups.find((g) => g.media === "video").models.map((m) => m.model)).toContain("veo-3.1");
  });

  it("normalizes params: keeps valid values, fills defaults, drops unknown, coerces wire forms", () => {
    const wan = routeFor(catalog, "wan-2.6", "generate");
    expect(normalizeParams(wan, { duration: 10, size: "8K", multiShots: "true", seed: "7", bogus: 1 })).toEqual({
      duration: "10", size: "1280*720", enablePromptExpansion: true, multiShots: true, seed: 7,
    });
    const seedance = routeFor(catalog, "seedance", "generate");  // required, no default: the first value
    expect(normalizeParams(seedance, { duration: 10 })).toEqual({ duration: "10", aspectRatio: "1:1", outputResolution: "480p" });
    const arrow = routeFor(catalog, "arrow-1.1", "vectorize");
    expect(normalizeParams(arrow, { target_size: 99999 })).toEqual({ target_size: 1024, auto_crop: false });
    expect(normalizeParams(arrow, { target_size: "512" })).toEqual({ target_size: 512, auto_crop: false });
  });

  it("assigns inputs to image params by name, then in order", () => {
    const veo = routeFor(catalog, "veo-3.1", "i2v");
    const inputs = [{ name: "a", status: "local" }, { name: "b", status: "local" }];
    const byParam = assignInputs(veo, "i2v", inputs);
    expect(byParam.image.map((i) => i.name)).toEqual(["a"]);
    expect(byParam.lastFrame.map((i) => i.name)).toEqual(["b"]);
    expect(missingInputs(veo, "i2v", [{ name: "z", status: "local", param: "lastFrame" }])).toBe("Add an image: Image");
    expect(missingInputs(veo, "i2v", [{ name: "z", status: "local", param: "lastFrame" }, { name: "y", status: "error", param: "image" }])).toBe("Add an image: Image");
    expect(missingInputs(veo, "generate", [])).toBe("");
    const edit = routeFor(catalog, "flux-2-pro", "edit");
    const nine = Array.from({ length: 9 }, (_, i) => ({ name: `${i}`, status: "uploaded" }));
    expect(missingInputs(edit, "edit", nine)).toBe("At most 8 images");
    expect(missingInputs(edit, "edit", [{ name: "x", status: "error" }])).toBe("Add at least 1 image");
  });
});

describe("CSS", () => {
  // Everything must be scoped under .ssw so nothing leaks into JupyterLab or VS Code.
  const dir = join(import.meta.dirname, "..", "css");
  const files = readdirSync(dir).filter((f) => f.endsWith(".css"));

  function selectors(css) {
    const out = [];
    let depth = 0;
    let prelude = "";
    const skip = []; // depths whose children are not selectors (@keyframes)
    for (const ch of css.replace(/\/\*[\s\S]*?\*\//g, "")) {
      if (ch === "{") {
        const p = prelude.trim();
        if (p.startsWith("@keyframes")) skip.push(depth + 1);
        else if (!p.startsWith("@") && !skip.includes(depth)) out.push(p);
        depth++;
        prelude = "";
      } else if (ch === "}") {
        if (skip.at(-1) === depth) skip.pop();
        depth--;
        prelude = "";
      } else if (ch === ";") prelude = "";
      else prelude += ch;
    }
    return out.flatMap((p) => p.split(",").map((s) => s.trim()));
  }

  it.each(files)("%s scopes every selector under .ssw", (file) => {
    const css = readFileSync(join(dir, file), "utf8");
    const list = selectors(css);
    expect(list.length).toBeGreaterThan(0);
    for (const sel of list) expect(sel, `${file}: ${sel}`).toMatch(/\.ssw(\.|\s|\[|:|$)/);
  });
});
