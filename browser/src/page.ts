// The browser half of the relay's browser test: a publisher and a subscriber, each its own
// WebTransport session through @moq/net, meeting at the relay named in the query string.
//
// Query: relay=https://127.0.0.1:PORT/root  fingerprint=HEX (SHA-256 of the relay's leaf
// certificate; none with relay=http://127.0.0.1:PORT/root, where @moq/net fetches it from
// the relay's /certificate.sha256 on that TCP port)  groups=N  frames=F  deadline=MS  mode=loop|publish|subscribe.
//   loop      this page publishes N groups of F frames and subscribes to them back through
//             the relay, checking every group arrives, in order, byte-identical.
//   publish   this page only publishes (another client subscribes and checks).
//   subscribe this page only subscribes and checks (another client publishes).
// The frames are `payload(group, frame)` (below; interop's `browser_payload` is the same).
//
// The page never throws past its top level: it ends with `window.moqResult` set to
// { ok, reason, ... } and the verdict box green or red, so the driver has one thing to wait
// for. Every wait inside is bounded by the deadline.
import { Broadcast, Connection, Path, Time } from "@moq/net";
import type * as Moq from "@moq/net";

type Established = Moq.Connection.Established;

interface Result {
    ok: boolean;
    reason: string;
    mode: string;
    version?: string;
    transport?: string;
    groups: number;
    frames: number;
    framesSent: number;
    framesReceived: number;
    bytesReceived: number;
    latencyMs?: { min: number; median: number; p95: number; max: number };
    elapsedMs: number;
}

declare global {
    interface Window {
        moqResult?: Result;
        moqLog: string[];
    }
}

const params = new URLSearchParams(location.search);
const relay = params.get("relay") ?? "";
const fingerprint = params.get("fingerprint") ?? "";
const GROUPS = Number(params.get("groups") ?? "30");
const FRAMES = Number(params.get("frames") ?? "5");
const DEADLINE_MS = Number(params.get("deadline") ?? "20000");
const MODE = params.get("mode") ?? "loop";
/** Pause between frames, so the run takes long enough to see and latency is per frame. */
const FRAME_GAP_MS = Number(params.get("gap") ?? "8");
const TRACK = "data";
/** When the publisher starts writing: "subscribed" (default) or "demand" (first upstream SUBSCRIBE). */
const GATE = params.get("gate") ?? "subscribed";
/** How long the relay's demand must hold unbroken before the first group (gate=subscribed). */
const SETTLE_MS = 200;
/** loop mode: resolves once this page's subscriber has its track info (its SUBSCRIBE follows). */
let markSubscriberReady: ((ready: Promise<void>) => void) | undefined;
const subscriberReady: Promise<void> | undefined =
    MODE === "loop" ? new Promise<void>((resolve) => (markSubscriberReady = (ready) => void ready.then(resolve))) : undefined;
const started = performance.now();
const deadline = started + DEADLINE_MS;

window.moqLog = [];

function log(message: string) {
    const line = `${(performance.now() - started).toFixed(0).padStart(6)} ms  ${message}`;
    window.moqLog.push(line);
    console.log(line);
    const box = document.getElementById("log");
    if (box) {
        box.textContent += `${line}\n`;
        box.scrollTop = box.scrollHeight;
    }
}

/** Frame `frame` of group `group`: frame 0 is 20 000 bytes (many packets), the rest 1..1500. */
export function payload(group: number, frame: number): Uint8Array {
    const len = frame === 0 ? 20_000 : 1 + ((group * 31 + frame * 7) % 1500);
    const out = new Uint8Array(len);
    let x = (Math.imul(group, 0x9e3779b9) ^ frame ^ 0x5555) >>> 0 || 1;
    for (let i = 0; i < len; i++) {
        x ^= x << 13;
        x >>>= 0;
        x ^= x >>> 17;
        x ^= x << 5;
        x >>>= 0;
        out[i] = x & 0xff;
    }
    return out;
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
    if (a.length !== b.length) return false;
    for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
    return true;
}

/** `promise`, or a rejection naming `what` once the page's deadline passes. */
function bounded<T>(what: string, promise: Promise<T>): Promise<T> {
    const left = deadline - performance.now();
    return new Promise<T>((resolve, reject) => {
        const timer = setTimeout(
            () => reject(new Error(`timed out (${DEADLINE_MS} ms deadline) waiting for ${what}`)),
            Math.max(0, left),
        );
        promise.then(
            (value) => {
                clearTimeout(timer);
                resolve(value);
            },
            (err) => {
                clearTimeout(timer);
                reject(err);
            },
        );
    });
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

// ---- what the page shows -------------------------------------------------------------

const state = {
    publisher: { state: MODE === "subscribe" ? "outside this page" : "idle", version: "", groups: 0, frames: 0, bytes: 0 },
    subscriber: {
        state: MODE === "publish" ? "outside this page" : "idle",
        version: "",
        groups: 0,
        frames: 0,
        bytes: 0,
        lastGroup: "-",
    },
};
/** Per received frame: [overall index, latency ms, group, frame]. */
const latencies: Array<[number, number, number, number]> = [];
const sentAt = new Map<string, number>();
/** subscribe mode: [overall index, arrival minus media time relative to the first frame, group, frame]. */
const jitter: Array<[number, number, number, number]> = [];
let firstArrival: { now: number; media: number } | undefined;
/** The first group's sequence: 0 for our own publisher, the live edge when joining one. */
let firstGroup = 0;
let drawPending = false;

function showRoles() {
    const p = state.publisher;
    const s = state.subscriber;
    const rows = (entries: Array<[string, string | number]>) =>
        entries.map(([k, v]) => `<dt>${k}</dt><dd>${v}</dd>`).join("");
    const pub = document.getElementById("publisher");
    const sub = document.getElementById("subscriber");
    if (pub)
        pub.innerHTML = rows([
            ["state", p.state],
            ["version", p.version || "-"],
            ["groups sent", `${p.groups} / ${MODE === "subscribe" ? "-" : GROUPS}`],
            ["frames sent", `${p.frames} / ${MODE === "subscribe" ? "-" : GROUPS * FRAMES}`],
            ["bytes sent", p.bytes.toLocaleString("en")],
        ]);
    if (sub)
        sub.innerHTML = rows([
            ["state", s.state],
            ["version", s.version || "-"],
            ["groups received", `${s.groups} / ${MODE === "publish" ? "-" : GROUPS}`],
            ["frames received", `${s.frames} / ${MODE === "publish" ? "-" : GROUPS * FRAMES}`],
            ["bytes received", s.bytes.toLocaleString("en")],
            ["last group", s.lastGroup],
        ]);
}

function percentile(sorted: number[], p: number): number {
    return sorted[Math.min(sorted.length - 1, Math.floor((sorted.length - 1) * p))];
}

function latencySummary() {
    if (latencies.length === 0) return undefined;
    const sorted = latencies.map((l) => l[1]).sort((a, b) => a - b);
    const round = (v: number) => Math.round(v * 10) / 10;
    return {
        min: round(sorted[0]),
        median: round(percentile(sorted, 0.5)),
        p95: round(percentile(sorted, 0.95)),
        max: round(sorted[sorted.length - 1]),
    };
}

/** Latency of every frame, publisher write to subscriber read, as dots; 20 KB frames red. */
function drawChart() {
    drawPending = false;
    const canvas = document.getElementById("chart") as HTMLCanvasElement | null;
    const ctx = canvas?.getContext("2d");
    if (!canvas || !ctx) return;
    const W = canvas.width;
    const H = canvas.height;
    const left = 50;
    const right = 10;
    const top = 24;
    const bottom = 30;
    ctx.clearRect(0, 0, W, H);
    ctx.fillStyle = "#222";
    ctx.font = "13px system-ui, sans-serif";
    const summary = latencySummary();
    const floor = Math.min(0, ...jitter.map((j) => j[1]));
    const points = MODE === "subscribe" ? jitter.map(([i, ms, g, f]) => [i, ms - floor, g, f] as const) : latencies;
    ctx.fillText(
        MODE === "publish"
            ? "latency per frame: measured by the subscriber (outside this page)"
            : MODE === "subscribe"
              ? "jitter (ms): arrival minus publisher timestamp, lowest 0"
              : summary
              ? `latency per frame, write to read (ms): min ${summary.min}  median ${summary.median}  p95 ${summary.p95}  max ${summary.max}`
              : "latency per frame, write to read (ms): waiting for frames",
        left,
        16,
    );
    const total = Math.max(1, GROUPS * FRAMES);
    const maxMs = Math.max(10, ...points.map((l) => l[1])) * 1.1;
    const x = (i: number) => left + ((W - left - right) * (i + 0.5)) / total;
    const y = (ms: number) => H - bottom - ((H - top - bottom) * ms) / maxMs;
    // axes and grid
    ctx.strokeStyle = "#ccc";
    ctx.lineWidth = 1;
    ctx.fillStyle = "#666";
    ctx.font = "11px system-ui, sans-serif";
    for (let t = 0; t <= 4; t++) {
        const ms = (maxMs * t) / 4;
        ctx.beginPath();
        ctx.moveTo(left, y(ms));
        ctx.lineTo(W - right, y(ms));
        ctx.stroke();
        ctx.fillText(ms.toFixed(ms < 10 ? 1 : 0), 8, y(ms) + 4);
    }
    for (let g = 0; g < GROUPS; g += Math.max(1, Math.ceil(GROUPS / 10))) {
        ctx.fillText(`g${firstGroup + g}`, x(g * FRAMES) - 6, H - 10);
    }
    for (const [i, ms, , frame] of points) {
        ctx.fillStyle = frame === 0 ? "#c62828" : "#1565c0";
        ctx.beginPath();
        ctx.arc(x(i), y(ms), frame === 0 ? 3.5 : 2.5, 0, 2 * Math.PI);
        ctx.fill();
    }
    // legend, top right
    ctx.font = "12px system-ui, sans-serif";
    ctx.fillStyle = "#c62828";
    ctx.fillText("● 20 KB frame (first of a group)", W - right - 330, 16);
    ctx.fillStyle = "#1565c0";
    ctx.fillText("● small frame", W - right - 110, 16);
}

function redraw() {
    showRoles();
    if (!drawPending) {
        drawPending = true;
        requestAnimationFrame(drawChart);
    }
}

// ---- the test ------------------------------------------------------------------------

async function open(role: "publisher" | "subscriber"): Promise<Established> {
    state[role].state = "connecting";
    redraw();
    const session = await bounded(
        `${role} connect to ${relay}`,
        Connection.connect(new URL(relay), {
            // An http:// relay URL is @moq/net's development form: it fetches the hash from
            // the relay's /certificate.sha256 itself and dials https:// on the same port.
            webtransport: fingerprint ? { serverCertificateHashes: [{ algorithm: "sha-256", value: fingerprint }] } : {},
            // WebTransport or nothing: a WebSocket fallback would pass without testing QUIC.
            websocket: { enabled: false },
            signal: AbortSignal.timeout(Math.max(1, deadline - performance.now())),
        }),
    );
    state[role].state = "connected";
    state[role].version = `${session.version} over ${session.transport}`;
    log(`${role}: connected, ${session.version} over ${session.transport}`);
    if (session.transport !== "webtransport") throw new Error(`${role} is on ${session.transport}, not WebTransport`);
    redraw();
    return session;
}

/** Resolves once `track` has had a subscriber for `holdMs` without a break (deadline-bounded). */
async function waitUsed(track: Moq.Track.Producer, holdMs: number) {
    let since: number | undefined;
    for (;;) {
        const now = performance.now();
        if (now > deadline) throw new Error("timed out waiting for the relay to subscribe to the track");
        if (!track.used.peek()) since = undefined;
        else if (since === undefined) since = now;
        if (since !== undefined && now - since >= holdMs) return;
        await sleep(5);
    }
}

async function publish(session: Established, path: Moq.Path.Valid) {
    const broadcast = new Broadcast.Producer();
    const track = broadcast.createTrack(TRACK, { ordered: true });
    session.publish(path, broadcast);
    state.publisher.state = `announced ${path}, waiting for a subscriber`;
    log(`publisher: announced ${path}, track ${TRACK}`);
    redraw();
    // Write nothing before the relay subscribes: moq-lite starts a subscription at the
    // newest group, so groups written earlier would not all be delivered.
    await waitUsed(track, 0);
    if (GATE === "subscribed") {
        // On moq-lite-05 the relay subscribes upstream for the subscriber's TRACK (info)
        // request, drops that when the info is answered, and subscribes again for its
        // SUBSCRIBE; a group written in between is lost or spliced (gate=demand shows it).
        // So, as the Rust e2e tests do by awaiting the subscription: start once the
        // subscriber has its track info and the relay's demand has held for SETTLE_MS.
        if (subscriberReady) await bounded("the subscriber's track info", subscriberReady);
        await waitUsed(track, SETTLE_MS);
    }
    state.publisher.state = "sending";
    log("publisher: relay subscribed, sending");
    for (let g = 0; g < GROUPS; g++) {
        const group = track.appendGroup();
        if (group.sequence !== g) throw new Error(`publisher: appendGroup gave sequence ${group.sequence}, expected ${g}`);
        for (let f = 0; f < FRAMES; f++) {
            const bytes = payload(g, f);
            sentAt.set(`${g}/${f}`, performance.now());
            group.writeFrame({ payload: bytes, timestamp: Time.Timestamp.now() });
            state.publisher.frames++;
            state.publisher.bytes += bytes.length;
            redraw();
            await sleep(FRAME_GAP_MS);
        }
        group.close();
        state.publisher.groups++;
        redraw();
    }
    state.publisher.state = "sent everything";
    log(`publisher: wrote ${GROUPS} groups of ${FRAMES} frames`);
    redraw();
    if (MODE === "publish") {
        // The other end reads through the relay: hold the broadcast until it unsubscribes.
        state.publisher.state = "sent everything, waiting for the subscriber to leave";
        redraw();
        while (track.used.peek()) {
            if (performance.now() > deadline) throw new Error("timed out waiting for the subscriber to finish and leave");
            await sleep(10);
        }
        log("publisher: the relay unsubscribed");
    }
    return { broadcast, track };
}

async function subscribe(session: Established, path: Moq.Path.Valid) {
    state.subscriber.state = `waiting for ${path} to be announced`;
    redraw();
    const announced = session.announced(Path.empty());
    for (;;) {
        const event = await bounded(`the announcement of ${path}`, announced.next());
        if (!event) throw new Error("announcements ended before the broadcast appeared");
        if (event.path === path && event.active) break;
    }
    announced.close();
    log(`subscriber: ${path} announced, subscribing to ${TRACK}`);
    const consumer = session.consume(path);
    const track = consumer.subscribe(TRACK, { ordered: true });
    markSubscriberReady?.(track.info().then(() => undefined));
    state.subscriber.state = "subscribed, receiving";
    redraw();
    // Our own publisher starts at group 0 once we are subscribed; another one (mode
    // subscribe) is live already, and a subscription starts at its newest group.
    let first = 0;
    for (let n = 0; n < GROUPS; n++) {
        const g = first + n;
        const group = await bounded(`group ${n === 0 && MODE === "subscribe" ? "(the first)" : g}`, track.recvGroup());
        if (!group) throw new Error(`track ended before group ${g}`);
        if (n === 0 && MODE === "subscribe") {
            first = group.sequence;
            firstGroup = first;
            log(`subscriber: joined the live track at group ${first}`);
        } else if (group.sequence !== g)
            throw new Error(`expected group ${g}, got group ${group.sequence}: out of order or missing`);
        const seq = group.sequence;
        for (let f = 0; ; f++) {
            const frame = await bounded(`frame ${f} of group ${seq}`, group.readFrame());
            if (!frame) {
                if (f !== FRAMES) throw new Error(`group ${seq} ended after ${f} frames, expected ${FRAMES}`);
                break;
            }
            const now = performance.now();
            if (f >= FRAMES) throw new Error(`group ${seq} has more than ${FRAMES} frames`);
            const expected = payload(seq, f);
            if (!sameBytes(frame.payload, expected))
                throw new Error(
                    `group ${seq} frame ${f}: ${frame.payload.length} bytes differ from the ${expected.length} sent`,
                );
            const sent = sentAt.get(`${seq}/${f}`);
            if (sent !== undefined) latencies.push([n * FRAMES + f, now - sent, seq, f]);
            else {
                // The publisher is elsewhere, on another clock: chart arrival against its
                // media timestamps instead, relative to the first frame (jitter, not latency).
                const media = (frame.timestamp.value * 1000) / frame.timestamp.scale;
                firstArrival ??= { now, media };
                jitter.push([n * FRAMES + f, now - firstArrival.now - (media - firstArrival.media), seq, f]);
            }
            state.subscriber.frames++;
            state.subscriber.bytes += frame.payload.length;
            redraw();
        }
        state.subscriber.groups++;
        state.subscriber.lastGroup = `${group.sequence} (${FRAMES} frames, identical)`;
        redraw();
    }
    state.subscriber.state = "received everything";
    log(`subscriber: ${GROUPS} groups of ${FRAMES} frames, in order, byte-identical`);
    track.close();
    consumer.close();
    redraw();
}

function finish(ok: boolean, reason: string, version?: string, transport?: string) {
    const result: Result = {
        ok,
        reason,
        mode: MODE,
        version,
        transport,
        groups: GROUPS,
        frames: FRAMES,
        framesSent: state.publisher.frames,
        framesReceived: state.subscriber.frames,
        bytesReceived: state.subscriber.bytes,
        latencyMs: latencySummary(),
        elapsedMs: Math.round(performance.now() - started),
    };
    const verdict = document.getElementById("verdict");
    if (verdict) {
        verdict.className = ok ? "pass" : "fail";
        verdict.textContent = ok ? `PASS: ${reason}` : `FAIL: ${reason}`;
    }
    log(`${ok ? "PASS" : "FAIL"}: ${reason}`);
    redraw();
    drawChart();
    // Set last: the driver reads the page (screenshot) as soon as this appears.
    requestAnimationFrame(() => {
        window.moqResult = result;
    });
}

async function main() {
    const info = document.getElementById("relay");
    const pin = fingerprint ? `certificate sha-256 ${fingerprint.slice(0, 16)}…` : "certificate hash from /certificate.sha256";
    if (info) info.textContent = `relay ${relay}  ${pin}  mode ${MODE}`;
    showRoles();
    drawChart();
    if (!relay) throw new Error("the page needs ?relay=URL");
    const fetchesHash = new URL(relay).protocol === "http:";
    if (fetchesHash ? fingerprint !== "" : !/^[0-9a-fA-F]{64}$/.test(fingerprint))
        throw new Error("the page needs ?fingerprint=64 hex digits with an https:// relay, and none with an http:// one");
    if (!Number.isInteger(GROUPS) || GROUPS < 1 || !Number.isInteger(FRAMES) || FRAMES < 1)
        throw new Error("groups and frames must be positive integers");
    const path = Path.from(params.get("path") ?? `browser-${Date.now().toString(36)}`);
    log(`relay ${relay}, broadcast ${path}, ${GROUPS} groups x ${FRAMES} frames, mode ${MODE}`);
    const sessions: Established[] = [];
    try {
        let version: string | undefined;
        let transport: string | undefined;
        const work: Promise<unknown>[] = [];
        if (MODE === "loop" || MODE === "publish") {
            const pub = await open("publisher");
            sessions.push(pub);
            version = pub.version;
            transport = pub.transport;
            work.push(publish(pub, path));
        }
        if (MODE === "loop" || MODE === "subscribe") {
            const sub = await open("subscriber");
            sessions.push(sub);
            version = sub.version;
            transport = sub.transport;
            work.push(subscribe(sub, path));
        }
        await Promise.all(work);
        finish(true, describe(), version, transport);
    } catch (err) {
        state.publisher.state = state.publisher.state.startsWith("sent") ? state.publisher.state : "failed";
        state.subscriber.state = state.subscriber.state.startsWith("received") ? state.subscriber.state : "failed";
        throw err;
    } finally {
        for (const session of sessions) session.close();
    }
}

function describe(): string {
    switch (MODE) {
        case "publish":
            return `published ${GROUPS} groups x ${FRAMES} frames`;
        case "subscribe":
            return `received ${GROUPS} groups x ${FRAMES} frames in order, byte-identical`;
        default:
            return `${GROUPS} groups x ${FRAMES} frames through the relay, in order, byte-identical`;
    }
}

/** An error's message; for @moq/net's transport race (an AggregateError) every cause's. */
function describeError(err: unknown): string {
    if (err instanceof AggregateError)
        return `${err.message}: ${err.errors.map((inner: unknown) => describeError(inner)).join("; ")}`;
    if (err instanceof Error) return `${err.name === "Error" ? "" : `${err.name}: `}${err.message}`;
    return String(err);
}

main().catch((err: unknown) => finish(false, describeError(err)));
