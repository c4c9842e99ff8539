// Bundle each widget's ES module (and the CSS it imports) into stablestudio_widgets/static/.
//   node build.mjs           production: minified, no source maps
//   node build.mjs --watch   development (use with ANYWIDGET_HMR=1): rebuilds on save, inline source maps
import * as esbuild from "esbuild";

const outdir = "stablestudio_widgets/static";
const watch = process.argv.includes("--watch");

const options = {
  entryPoints: ["studio", "jobcard", "gallery", "compare"].map((name) => `js/${name}.js`),
  outdir, // -> static/<name>.js and static/<name>.css
  bundle: true,
  format: "esm",
  target: "es2020",
  splitting: false, // anywidget loads one self-contained module per widget
  minify: !watch,
  sourcemap: watch ? "inline" : false,
  logLevel: "info",
};

if (watch) {
  const ctx = await esbuild.context(options);
  await ctx.watch();
} else {
  await esbuild.build(options); // logLevel "info" prints each output file and its size
}
