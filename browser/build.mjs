// Bundles src/page.ts (and @moq/net) into dist/page.js next to a copy of page.html.
// No type checking: esbuild strips the types; the page's behaviour is the test.
import { copyFileSync, mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";

const here = dirname(fileURLToPath(import.meta.url));
const dist = join(here, "dist");
mkdirSync(dist, { recursive: true });
await esbuild.build({
    entryPoints: [join(here, "src", "page.ts")],
    outfile: join(dist, "page.js"),
    bundle: true,
    format: "esm",
    target: "chrome120",
    sourcemap: "inline",
    logLevel: "warning",
});
copyFileSync(join(here, "page.html"), join(dist, "index.html"));
