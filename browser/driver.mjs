#!/usr/bin/env node
// Runs the browser test page (dist/, from build.mjs) in the system Chromium against a relay
// somebody else started, and reports the page's verdict.
//
//   node driver.mjs --relay https://127.0.0.1:PORT/root --fingerprint HEX --out DIR
//   node driver.mjs --relay http://127.0.0.1:PORT/root --out DIR   (hash from the relay)
//                   [--mode loop|publish|subscribe] [--groups 30] [--frames 5]
//                   [--deadline-ms 30000] [--path NAME] [--gate subscribed|demand]
//                   [--chromium /usr/bin/chromium]
//
// It starts nothing but a static file server on 127.0.0.1 (an http://127.0.0.1 page is a
// secure context, so WebTransport is allowed) and one headless Chromium with a fresh
// profile. It writes DIR/browser-MODE.png (a screenshot of the page) and
// DIR/browser-MODE.log (the page's log and console), prints one line
// `browser result: {json}` and exits 0 when the page passed, 1 when it failed or did not
// finish by the deadline (the page's log goes to stderr), 2 when it could not run at all.
// Every wait is bounded: the page's own deadline, plus a margin here for start-up.
import { createReadStream, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import { dirname, extname, join, normalize } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

const here = dirname(fileURLToPath(import.meta.url));
const dist = join(here, "dist");

/** Start-up of Chromium and the page on a loaded 2-core machine, on top of the page's deadline. */
const MARGIN_MS = 30_000;
/** Chromium's own flags for this machine; QUIC stays on, WebTransport needs it. */
const CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
];

function usage(message) {
    console.error(`driver: ${message}`);
    console.error(
        "usage: node driver.mjs --relay https://127.0.0.1:PORT/root --fingerprint HEX | --relay http://127.0.0.1:PORT/root --out DIR [--mode loop|publish|subscribe] [--groups N] [--frames N] [--deadline-ms MS] [--path NAME] [--chromium PATH]",
    );
    process.exit(2);
}

let options;
try {
    options = parseArgs({
        options: {
            relay: { type: "string" },
            fingerprint: { type: "string" },
            out: { type: "string" },
            mode: { type: "string", default: "loop" },
            groups: { type: "string", default: "30" },
            frames: { type: "string", default: "5" },
            "deadline-ms": { type: "string", default: "30000" },
            path: { type: "string" },
            gate: { type: "string", default: "subscribed" },
            chromium: { type: "string", default: process.env.CHROMIUM ?? "/usr/bin/chromium" },
        },
    }).values;
} catch (err) {
    usage(err.message);
}
if (!options.relay) usage("--relay is required");
// @moq/net's http:// form fetches the relay's certificate hash itself; https:// needs it given.
const fetchesHash = options.relay.startsWith("http://");
if (fetchesHash && options.fingerprint !== undefined) usage("an http:// relay serves its own hash: no --fingerprint");
if (!fetchesHash && !/^[0-9a-fA-F]{64}$/.test(options.fingerprint ?? ""))
    usage("--fingerprint must be 64 hex digits with an https:// relay");
if (!options.out) usage("--out is required");
if (!["loop", "publish", "subscribe"].includes(options.mode)) usage(`unknown --mode ${options.mode}`);
if (!["subscribed", "demand"].includes(options.gate)) usage(`unknown --gate ${options.gate}`);
if (!existsSync(join(dist, "index.html")) || !existsSync(join(dist, "page.js")))
    usage(`${dist} has no page: run \`node build.mjs\` first`);
if (!existsSync(options.chromium)) usage(`no Chromium at ${options.chromium} (Debian: apt-get install chromium)`);
const deadlineMs = Number(options["deadline-ms"]);
if (!Number.isFinite(deadlineMs) || deadlineMs <= 0) usage("--deadline-ms must be a positive number");

let chromium;
try {
    ({ chromium } = await import("playwright-core"));
} catch (err) {
    usage(`playwright-core is not installed (run \`npm ci\` in ${here}): ${err.message}`);
}

const TYPES = { ".html": "text/html", ".js": "text/javascript", ".map": "application/json" };

/** Serves dist/ read-only on an ephemeral 127.0.0.1 port. */
function serve() {
    const server = createServer((req, res) => {
        const url = new URL(req.url ?? "/", "http://127.0.0.1");
        const name = url.pathname === "/" ? "index.html" : normalize(url.pathname).replace(/^([/\\])+/, "");
        const file = join(dist, name);
        if (!file.startsWith(dist) || !existsSync(file)) {
            res.writeHead(404).end();
            return;
        }
        res.writeHead(200, { "content-type": TYPES[extname(file)] ?? "application/octet-stream", "cache-control": "no-store" });
        createReadStream(file).pipe(res);
    });
    return new Promise((resolve, reject) => {
        server.once("error", reject);
        server.listen(0, "127.0.0.1", () => resolve(server));
    });
}

mkdirSync(options.out, { recursive: true });
const stem = join(options.out, `browser-${options.mode}`);
const lines = [];
const note = (line) => lines.push(line);

const server = await serve();
const query = new URLSearchParams({
    relay: options.relay,
    fingerprint: options.fingerprint ?? "",
    mode: options.mode,
    groups: options.groups,
    frames: options.frames,
    deadline: String(deadlineMs),
});
if (options.path) query.set("path", options.path);
query.set("gate", options.gate);
const pageUrl = `http://127.0.0.1:${server.address().port}/?${query}`;
const profile = mkdtempSync(join(tmpdir(), "moq-browser-profile-"));

let browser;
let result;
let failure;
const hardStop = setTimeout(() => {
    // A Chromium that ignores close() must not hold CI: report and leave.
    console.error(`driver: still running ${deadlineMs + 2 * MARGIN_MS} ms after start; giving up`);
    process.exit(1);
}, deadlineMs + 2 * MARGIN_MS);
hardStop.unref();

try {
    // launchPersistentContext: the profile directory is ours and fresh, not a reused one.
    const context = await chromium.launchPersistentContext(profile, {
        executablePath: options.chromium,
        headless: false, // CHROMIUM_ARGS has --headless=new
        args: CHROMIUM_ARGS,
        viewport: { width: 1000, height: 760 },
        timeout: MARGIN_MS,
    });
    browser = context;
    const page = context.pages()[0] ?? (await context.newPage());
    page.on("console", (msg) => note(`console.${msg.type()}: ${msg.text()}`));
    page.on("pageerror", (err) => note(`pageerror: ${err.message}`));
    note(`page ${pageUrl}`);
    await page.goto(pageUrl, { timeout: MARGIN_MS });
    try {
        await page.waitForFunction(() => window.moqResult !== undefined, undefined, {
            timeout: deadlineMs + MARGIN_MS,
            polling: 100,
        });
        result = await page.evaluate(() => window.moqResult);
    } catch (err) {
        failure = `the page gave no result within ${deadlineMs + MARGIN_MS} ms: ${err.message.split("\n")[0]}`;
    }
    await page.screenshot({ path: `${stem}.png`, fullPage: true, timeout: MARGIN_MS }).catch((err) => {
        note(`screenshot failed: ${err.message}`);
    });
    const pageLog = await page.evaluate(() => window.moqLog ?? []).catch(() => []);
    lines.unshift(...pageLog.map((line) => `page: ${line}`));
} catch (err) {
    failure = `could not run the page in ${options.chromium}: ${err.message.split("\n")[0]}`;
} finally {
    await browser?.close().catch(() => {});
    server.close();
    rmSync(profile, { recursive: true, force: true });
}

if (!failure && result && !result.ok) failure = result.reason;
if (!failure && !result) failure = "no result";
lines.push(`result: ${JSON.stringify(result ?? null)}`);
if (failure) lines.push(`failure: ${failure}`);
writeFileSync(`${stem}.log`, `${lines.join("\n")}\n`);
console.log(`browser result: ${JSON.stringify({ ok: !failure, failure, ...result })}`);
console.log(`browser screenshot: ${stem}.png`);
if (failure) {
    console.error(`driver: FAIL: ${failure}`);
    console.error(lines.join("\n"));
    process.exit(1);
}
process.exit(0);
