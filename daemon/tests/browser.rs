//! A real browser against the real `moq-relayd`: the system Chromium, driven by
//! `browser/driver.mjs` (node + playwright-core), runs `browser/`'s page, which uses
//! moq-dev's JS client `@moq/net` over WebTransport with `serverCertificateHashes`.
//! The relay runs with 2 workers on an ephemeral UDP port; the page publishes groups and
//! subscribes to them back through the relay, checking order and bytes.
//!
//! Needs `node`, `browser/node_modules` (`npm ci` in browser/) and Chromium
//! (`/usr/bin/chromium`, or `$CHROMIUM`). `.ci/run` installs them, and under CI (`CI`
//! set, as CI runs `.ci/run`) or `MOQ_BROWSER_TEST=require` a missing piece fails the
//! test; a plain `cargo test` on a machine without them prints why and passes (skips);
//! `MOQ_BROWSER_TEST=skip` skips regardless.
//!
//! Each run leaves `browser-MODE.png` (a screenshot of the page) and `browser-MODE.log`
//! in `target/tmp/browser/<test>/`; the path is printed.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::Running;

/// Two workers, not pinned (the CI machine is shared), any port, anonymous access.
const TWO_WORKERS_V4: &str = "[server]\nbind = \"127.0.0.1:0\"\ntls.generate = [\"localhost\"]\n[runtime]\nworkers = 2\npin = false\n[auth]\npublic = \"\"\n";
/// The same on the dual-stack wildcard, the production default (`[::]:443`).
const TWO_WORKERS_DUAL_STACK: &str = "[server]\nbind = \"[::]:0\"\ntls.generate = [\"localhost\"]\n[runtime]\nworkers = 2\npin = false\n[auth]\npublic = \"\"\n";

/// What the page is asked for, and how long it may take (it fails itself past this).
const PAGE_DEADLINE: Duration = Duration::from_secs(30);
/// The driver's own bound on top (Chromium start-up on a loaded 2-core machine); past
/// this the driver is killed and the test fails.
const DRIVER_TIMEOUT: Duration = Duration::from_secs(120);

/// One Chromium at a time: two on 2 shared cores make the latency chart noise.
static BROWSER: Mutex<()> = Mutex::new(());

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../browser")
}

fn chromium() -> PathBuf {
    std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

/// Why this machine cannot run the browser test, if it cannot.
fn missing_prerequisite() -> Option<String> {
    let dir = browser_dir();
    if Command::new("node")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_or(true, |status| !status.success())
    {
        return Some("`node` is not on PATH".into());
    }
    for package in ["playwright-core", "esbuild", "@moq/net"] {
        if !dir.join("node_modules").join(package).is_dir() {
            return Some(format!(
                "{} has no node_modules/{package} (run `npm ci` there)",
                dir.display()
            ));
        }
    }
    let chromium = chromium();
    if !chromium.is_file() {
        return Some(format!(
            "no Chromium at {} (Debian: `apt-get install chromium`, or set CHROMIUM)",
            chromium.display()
        ));
    }
    None
}

/// `Some(guard)` when the test should run; `None` (after saying why) when it may skip.
/// Panics when CI requires the test and something is missing.
/// `MOQ_BROWSER_TEST=skip` skips even where everything is installed (a way to take the
/// test out of `.ci/run` for a while without deleting it).
fn prerequisites() -> Option<std::sync::MutexGuard<'static, ()>> {
    let setting = std::env::var("MOQ_BROWSER_TEST").unwrap_or_default();
    if setting == "skip" {
        std::io::Write::write_all(
            &mut std::io::stderr(),
            b"skipping the browser test: MOQ_BROWSER_TEST=skip\n",
        )
        .ok();
        return None;
    }
    // CI (which `.ci/run` runs with CI=true) must run it; elsewhere a missing piece skips.
    let required = setting == "require" || std::env::var_os("CI").is_some_and(|v| !v.is_empty());
    if let Some(why) = missing_prerequisite() {
        assert!(
            !required,
            "MOQ_BROWSER_TEST=require but {why}; .ci/run installs these"
        );
        // Straight to stderr: libtest captures eprintln! of a passing test, and a skip
        // nobody sees reads as a pass.
        let line =
            format!("skipping the browser test: {why} (MOQ_BROWSER_TEST=require fails instead)\n");
        std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes()).ok();
        return None;
    }
    let guard = BROWSER
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    // Bundle the page afresh: esbuild takes well under a second.
    let status = Command::new("node")
        .arg("build.mjs")
        .current_dir(browser_dir())
        .status()
        .expect("run node build.mjs");
    assert!(status.success(), "node build.mjs failed: {status}");
    Some(guard)
}

/// Where a test's screenshot and page log go.
fn out_dir(test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("browser")
        .join(test);
    std::fs::create_dir_all(&dir).expect("create the browser output directory");
    dir
}

/// What `driver.mjs` reported.
struct DriverRun {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl DriverRun {
    /// The `browser result: {json}` line.
    fn result_line(&self) -> &str {
        self.stdout
            .lines()
            .find(|line| line.starts_with("browser result: "))
            .unwrap_or("(no result line)")
    }
}

/// Runs the driver against `relay_url` with `args` appended, bounded by [`DRIVER_TIMEOUT`].
/// An `https://` URL needs the certificate's `fingerprint`; an `http://` one takes none
/// (the client fetches it from the relay).
fn run_driver(relay_url: &str, fingerprint: Option<&str>, out: &Path, args: &[&str]) -> DriverRun {
    let deadline_ms = PAGE_DEADLINE.as_millis().to_string();
    let mut child = Command::new("node")
        .arg("driver.mjs")
        .args(["--relay", relay_url])
        .args(
            fingerprint
                .map(|hash| ["--fingerprint", hash])
                .into_iter()
                .flatten(),
        )
        .arg("--out")
        .arg(out)
        .args(["--deadline-ms", &deadline_ms])
        .args(args)
        .current_dir(browser_dir())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start node driver.mjs");
    // Read both pipes on threads so a chatty failure cannot block the driver on a full pipe.
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let out_reader = std::thread::spawn(move || {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut text).ok();
        text
    });
    let err_reader = std::thread::spawn(move || {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut stderr, &mut text).ok();
        text
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the driver") {
            break Some(status);
        }
        if started.elapsed() > DRIVER_TIMEOUT {
            child.kill().ok();
            child.wait().ok();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let run = DriverRun {
        ok: status.is_some_and(|s| s.success()),
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    };
    eprintln!(
        "driver ({:.1} s, {}): {}\nscreenshot and page log in {}",
        started.elapsed().as_secs_f64(),
        match status {
            Some(status) => status.to_string(),
            None => format!("killed after {DRIVER_TIMEOUT:?}"),
        },
        run.result_line(),
        out.display()
    );
    run
}

fn assert_passed(run: &DriverRun, what: &str) {
    assert!(
        run.ok,
        "{what}: the browser test failed\n{}\n--- driver stderr (the page's log) ---\n{}",
        run.stdout, run.stderr
    );
    assert!(
        run.result_line().contains("\"transport\":\"webtransport\""),
        "{what}: not over WebTransport: {}",
        run.result_line()
    );
}

#[test]
fn browser_publishes_and_subscribes_through_two_workers_in_order_byte_identical() {
    let Some(_browser) = prerequisites() else {
        return;
    };
    let relay = Running::start(TWO_WORKERS_V4);
    let out = out_dir("loop");
    let run = run_driver(
        &relay.https_url("browser"),
        Some(&relay.fingerprint),
        &out,
        &["--groups", "30", "--frames", "5"],
    );
    assert_passed(&run, "30 groups of 5 frames over https://127.0.0.1");
    assert!(out.join("browser-loop.png").is_file(), "no screenshot");
}

/// A relay on the dual-stack wildcard is reachable as `localhost` (Chromium resolves it
/// to ::1 and does not fall back to 127.0.0.1 for QUIC) and as 127.0.0.1 alike; the
/// generated certificate names `localhost`, and with `serverCertificateHashes` the
/// browser checks only the hash, not the name.
#[test]
fn browser_reaches_a_dual_stack_relay_as_localhost_and_127_0_0_1() {
    let Some(_browser) = prerequisites() else {
        return;
    };
    let relay = Running::start(TWO_WORKERS_DUAL_STACK);
    let port = relay.addr.port();
    for host in ["localhost", "127.0.0.1"] {
        let out = out_dir(&format!("dual-stack-{host}"));
        let run = run_driver(
            &format!("https://{host}:{port}/browser"),
            Some(&relay.fingerprint),
            &out,
            &["--groups", "5", "--frames", "3"],
        );
        assert_passed(&run, &format!("https://{host}:{port} on a [::] relay"));
    }
}

/// moq-dev's development form: given `http://HOST:PORT/path`, @moq/net fetches
/// `http://HOST:PORT/certificate.sha256` (TCP, cross-origin from the page, so the relay's
/// CORS header matters), pins that hash and dials `https://HOST:PORT/path` over QUIC. The
/// relay's `[web.http]` listener shares the QUIC port number for that.
#[test]
fn browser_given_an_http_url_fetches_the_certificate_hash_from_the_relay() {
    let Some(_browser) = prerequisites() else {
        return;
    };
    // A port free on both UDP and TCP (the probe sockets close before the relay binds).
    let port = (0..50)
        .find_map(|_| {
            let udp = std::net::UdpSocket::bind("127.0.0.1:0").ok()?;
            let port = udp.local_addr().ok()?.port();
            std::net::TcpListener::bind(("127.0.0.1", port)).ok()?;
            Some(port)
        })
        .expect("a port free on UDP and TCP");
    let relay = Running::start(&format!(
        "[server]\nbind = \"127.0.0.1:{port}\"\ntls.generate = [\"localhost\"]\n[web.http]\nlisten = \"127.0.0.1:{port}\"\n[runtime]\nworkers = 2\npin = false\n[auth]\npublic = \"\"\n"
    ));
    let out = out_dir("http-form");
    assert_eq!(relay.addr.port(), port);
    let url = format!("http://127.0.0.1:{port}/browser");
    let run = run_driver(&url, None, &out, &["--groups", "10", "--frames", "3"]);
    assert_passed(&run, &format!("{url} (hash from /certificate.sha256)"));
}

/// The test is only worth having if it can fail: a certificate hash that is not the
/// relay's must end the run with the page's reason, quickly, not pass or hang.
#[test]
fn browser_refuses_a_relay_whose_certificate_hash_differs() {
    let Some(_browser) = prerequisites() else {
        return;
    };
    let relay = Running::start(TWO_WORKERS_V4);
    let wrong: String = relay
        .fingerprint
        .chars()
        .map(|c| if c == '0' { '1' } else { '0' })
        .collect();
    let out = out_dir("wrong-fingerprint");
    let run = run_driver(
        &relay.https_url("browser"),
        Some(&wrong),
        &out,
        &["--groups", "2", "--frames", "2"],
    );
    assert!(
        !run.ok,
        "passed with a wrong certificate hash: {}",
        run.stdout
    );
    assert!(
        run.result_line().contains("handshake"),
        "failed, but not at the handshake: {}",
        run.result_line()
    );
}

/// The page's `payload(group, frame)`: frame 0 is 20 000 bytes, the rest 1..=1500, the
/// bytes a 32-bit xorshift seeded from both numbers (what JS computes cheaply).
fn browser_payload(group: u64, frame: u64) -> interop::Bytes {
    let len = if frame == 0 {
        20_000
    } else {
        1 + ((group * 31 + frame * 7) % 1500) as usize
    };
    let mut x = (group as u32).wrapping_mul(0x9e37_79b9) ^ frame as u32 ^ 0x5555;
    if x == 0 {
        x = 1;
    }
    let bytes: Vec<u8> = (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    interop::Bytes::from(bytes)
}

/// Groups and frames per group of the two cross-implementation tests.
const CROSS_GROUPS: u64 = 20;
const CROSS_FRAMES: u64 = 4;
/// Bounds the Rust half of a cross-implementation test.
const RUST_SIDE_TIMEOUT: Duration = Duration::from_secs(90);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

fn trust(relay: &Running) -> interop::TlsTrust {
    interop::TlsTrust::Fingerprint(relay.fingerprint.clone())
}

/// Browser publisher, Rust reference subscriber (moq-net via interop): every group, in
/// order, byte-identical, the other way round from the page's own subscriber.
#[test]
fn reference_subscriber_receives_in_order_what_a_browser_publishes() {
    use interop::{ConnectOptions, TrackEvent};
    let Some(_browser) = prerequisites() else {
        return;
    };
    // The one-browser-at-a-time guard is a std Mutex held for the whole test: keep it
    // outside async code (no guard across an await) by blocking on a runtime of our own.
    runtime().block_on(async {
        let relay = Running::start(TWO_WORKERS_V4);
        let url = relay.https_url("browser");
        let driver = {
            let (url, fingerprint, out) = (
                url.clone(),
                relay.fingerprint.clone(),
                out_dir("browser-publishes"),
            );
            let (groups, frames) = (CROSS_GROUPS.to_string(), CROSS_FRAMES.to_string());
            tokio::task::spawn_blocking(move || {
                run_driver(
                    &url,
                    Some(&fingerprint),
                    &out,
                    &[
                        "--mode",
                        "publish",
                        "--path",
                        "from-browser",
                        "--groups",
                        &groups,
                        "--frames",
                        &frames,
                    ],
                )
            })
        };
        let subscriber = async {
            let session =
                interop::connect_with(&url, ConnectOptions::new(trust(&relay)).subscribe_only(""))
                    .await
                    .expect("connect the reference subscriber");
            let mut announcements = session.announcements().expect("announcements");
            announcements
                .wait_announced("from-browser")
                .await
                .expect("the browser's broadcast announced");
            let mut sub = session
                .subscribe("from-browser", "data")
                .await
                .expect("subscribe to the browser's track");
            for group in 0..CROSS_GROUPS {
                for index in 0..CROSS_FRAMES {
                    match sub.next().await.expect("a track event") {
                        TrackEvent::Frame(frame) => {
                            assert_eq!((frame.group, frame.index), (group, index), "frame order");
                            assert_eq!(
                                frame.payload,
                                browser_payload(group, index),
                                "payload of group {group} frame {index}"
                            );
                        }
                        other => panic!("expected frame {index} of group {group}, got {other:?}"),
                    }
                }
                match sub.next().await.expect("a track event") {
                    TrackEvent::GroupEnd { group: g, frames } => {
                        assert_eq!((g, frames), (group, CROSS_FRAMES), "group end")
                    }
                    other => panic!("expected the end of group {group}, got {other:?}"),
                }
            }
            // Leaving ends the relay's demand, which is what the page waits for to pass.
            session.close().await;
        };
        tokio::time::timeout(RUST_SIDE_TIMEOUT, subscriber)
            .await
            .expect("the reference subscriber finished in time");
        let run = driver.await.expect("the driver thread");
        assert_passed(&run, "browser publishing to the reference subscriber");
    });
}

/// Rust reference publisher (a live track, a group every few tens of milliseconds),
/// browser subscriber: it joins at the newest group and then must see the next ones in
/// order, complete and byte-identical.
#[test]
fn browser_receives_in_order_what_the_reference_publisher_sends() {
    use interop::ConnectOptions;
    let Some(_browser) = prerequisites() else {
        return;
    };
    // The one-browser-at-a-time guard is a std Mutex held for the whole test: keep it
    // outside async code (no guard across an await) by blocking on a runtime of our own.
    runtime().block_on(async {
        let relay = Running::start(TWO_WORKERS_V4);
        let url = relay.https_url("browser");
        // The publisher speaks what the relay prefers (06) and the browser 05: a 06
        // publisher live for a while once answered the relay's upstream SUBSCRIBE with a
        // burst of its cache, and the browser's first group came out of order or reset.
        let options = ConnectOptions::new(trust(&relay)).publish_only();
        let publisher = interop::connect_with(&url, options)
            .await
            .expect("connect the reference publisher");
        let (_broadcast, mut tracks) = publisher
            .publish("from-rust", &["data"])
            .expect("publish from-rust");
        let track = tracks.pop().expect("one track");
        let driver = {
            let (url, fingerprint, out) = (
                url.clone(),
                relay.fingerprint.clone(),
                out_dir("browser-subscribes"),
            );
            let (groups, frames) = (CROSS_GROUPS.to_string(), CROSS_FRAMES.to_string());
            tokio::task::spawn_blocking(move || {
                run_driver(
                    &url,
                    Some(&fingerprint),
                    &out,
                    &[
                        "--mode",
                        "subscribe",
                        "--path",
                        "from-rust",
                        "--groups",
                        &groups,
                        "--frames",
                        &frames,
                    ],
                )
            })
        };
        let started = Instant::now();
        while !driver.is_finished() {
            assert!(
                started.elapsed() < DRIVER_TIMEOUT + Duration::from_secs(10),
                "the driver outlived its own bound"
            );
            let mut group = track.append_group().expect("append a group");
            let sequence = group.sequence();
            for frame in 0..CROSS_FRAMES {
                group
                    .write_frame(browser_payload(sequence, frame))
                    .expect("write a frame");
                tokio::time::sleep(Duration::from_millis(8)).await;
            }
            group.finish().expect("finish the group");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let run = driver.await.expect("the driver thread");
        assert_passed(&run, "reference publisher to the browser");
        publisher.close().await;
    });
}
