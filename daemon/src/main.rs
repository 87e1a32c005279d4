//! The `moq-relayd` binary: command line, configuration, logging, then the control
//! thread (signals, systemd notification) while the workers serve.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

use moq_relayd::config::{self, Loaded, Source};
use moq_relayd::{auth, control, listen, logging, notify, relay, support};

/// Exit status for a configuration that cannot be used (as with `--check`).
const EXIT_BAD_CONFIG: u8 = 2;

/// How often the control thread looks at signals and worker health. Signals are handled
/// within this delay; it is not on any data path.
const CONTROL_TICK: Duration = Duration::from_millis(50);

/// After the drain deadline, how long the sessions' closes get before the server stops
/// (moq-relay 0.17: at most 1 s for closes that never complete).
const CLOSE_GRACE: Duration = Duration::from_secs(1);

fn main() -> ExitCode {
    let cli = match config::args::parse(std::env::args_os()) {
        Ok(cli) => cli,
        // clap prints --help/--version to stdout (exit 0) and errors naming the flag
        // (exit 2, as with a bad file).
        Err(err) => err.exit(),
    };
    let loaded = match config::load_with(cli.config.as_deref(), &cli.overrides) {
        Ok(loaded) => loaded,
        Err(err) => {
            eprintln!("moq-relayd: configuration error: {err}");
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };

    if cli.check {
        match &loaded.source {
            Source::File(path) => println!("{}: configuration OK", path.display()),
            Source::Embedded => println!("<embedded default>: configuration OK"),
            Source::Flags => println!("<flags and environment>: configuration OK"),
        }
        return ExitCode::SUCCESS;
    }
    if cli.print_config {
        return match config::to_toml(&loaded.config.filled()) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("moq-relayd: cannot print the configuration: {err}");
                ExitCode::FAILURE
            }
        };
    }

    logging::init(loaded.config.log.level);
    match run(loaded, &cli.overrides) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(loaded: Loaded, overrides: &[config::args::Override]) -> anyhow::Result<()> {
    for key in loaded.config.auth.unknown.keys() {
        tracing::warn!(key = %format!("auth.{key}"), "unknown [auth] key ignored, as moq-relay does");
    }
    for key in support::unsupported(&loaded.keys_set) {
        if !loaded
            .config
            .auth
            .unknown
            .keys()
            .any(|unknown| key == format!("auth.{unknown}"))
        {
            tracing::warn!(
                key,
                "configuration key is not yet supported by this build; it has no effect"
            );
        }
    }
    // Handlers go in before READY: systemd may send SIGHUP or SIGTERM the moment it
    // hears READY, and the default action of both would kill us.
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP])
        .context("cannot install signal handlers")?;
    let config = &loaded.config;
    // A key that fails to load is reported by `relay::start` below.
    if auth::Authenticator::new(&config.auth).is_ok_and(|auth| auth.refuses_everyone()) {
        tracing::warn!(
            "[auth] grants nothing (no `public`, no key): every publish and subscribe will be refused"
        );
    }
    let allowed_cpus = config::allowed_cpus();
    let relay = relay::start(config, &allowed_cpus)?;
    if let Some(upstream) = &relay.upstream {
        tracing::info!(peers = config.cluster.connect.len(), local = %upstream.local_addr(), "upstream core dialing cluster peers");
    }
    let server = &relay.handle;
    let local_addr = server.local_addr();
    let fingerprint = server.fingerprint();
    let mut control_state = control::ControlState::new(
        fingerprint.clone(),
        server.worker_stats(),
        relay.links.clone(),
        relay.drain.clone(),
        auth::Authenticator::new(&config.auth).ok(),
    );
    control_state.decider = relay.decider.as_ref().map(|decider| decider.http());
    control_state.cluster = relay.cluster.clone();
    control_state.upstream_counters = relay.upstream_counters.clone();
    let http = control::start(
        &control::Listeners {
            web: config.web.http.listen.clone(),
            https: config.web.https.listen.clone().map(|listen| {
                let https = &config.web.https;
                (listen, https.cert.0.clone(), https.key.0.clone())
            }),
            internal: config.internal.listen.clone(),
            housekeeping_cpus: listen::housekeeping_cpus(&config.runtime, &allowed_cpus),
            stats: moq_relayd::stats::Settings::from_config(&config.stats),
            cluster_api: relay.cluster_api.clone(),
            cluster_gossip: relay.cluster_gossip.clone(),
        },
        control_state,
    )?;

    match &loaded.source {
        Source::Embedded => tracing::info!(
            "no configuration file: serving on udp://{local_addr} with a self-signed certificate for localhost and anonymous access for everyone"
        ),
        Source::File(path) => {
            tracing::info!(config = %path.display(), "serving on udp://{local_addr}")
        }
        Source::Flags => {
            tracing::info!(
                config = "<flags and environment>",
                "serving on udp://{local_addr}"
            )
        }
    }
    if let Some(addr) = http.web_addr {
        tracing::info!(listener = "web", "web HTTP listening on http://{addr}");
    }
    if let Some(addr) = http.https_addr {
        let fingerprint = http
            .state
            .https
            .as_ref()
            .map(|tls| tls.fingerprint())
            .unwrap_or_default();
        tracing::info!(listener = "web", https_leaf_sha256 = %fingerprint, "web HTTPS listening on https://{addr}");
    }
    if let Some(addr) = http.internal_addr {
        tracing::info!(
            listener = "internal",
            "internal HTTP listening on http://{addr}"
        );
    }
    tracing::info!(
        %local_addr,
        workers = server.workers(),
        io = server.backend(),
        hop_id = relay.hop_id,
        certificate_sha256 = %fingerprint,
        "listening; clients connect to https://{} (WebTransport or raw QUIC moq-lite)",
        client_authority(local_addr),
    );
    notify::ready(&format!("serving on udp://{local_addr}"));

    let drain_timeout = config
        .drain_timeout
        .unwrap_or(config::DEFAULT_DRAIN_TIMEOUT);
    let drain_refuse_new = config.drain_refuse_new.unwrap_or(false);
    let mut drain_deadline: Option<(Instant, Instant)> = None;
    let watchdog = notify::watchdog_interval();
    let mut last_ping = Instant::now();
    'control: loop {
        for signal in signals.pending() {
            match signal {
                SIGHUP => reload(&loaded.source, overrides, server, &relay.auth, &http.state),
                _ if drain_deadline.is_some() => {
                    tracing::info!(signal, "second shutdown signal; exiting immediately");
                    break 'control;
                }
                _ => {
                    notify::stopping();
                    if drain_timeout.is_zero() {
                        tracing::info!(
                            signal,
                            "shutdown signal received; drain_timeout is 0: closing every session"
                        );
                        break 'control;
                    }
                    tracing::info!(
                        signal,
                        ?drain_timeout,
                        "shutdown signal received; draining sessions"
                    );
                    if drain_refuse_new {
                        server.refuse_new_connections();
                        tracing::info!("drain: refusing new handshakes (drain_refuse_new)");
                    }
                    relay.drain.start();
                    for link in &relay.links {
                        link.wake();
                    }
                    let now = Instant::now();
                    drain_deadline = Some((now, now + drain_timeout));
                }
            }
        }
        if let Some((started, deadline)) = drain_deadline {
            let left = http.state.live_sessions();
            if left == 0 {
                tracing::info!(elapsed = ?started.elapsed(), "drain complete: every session left; exiting");
                break 'control;
            }
            if Instant::now() >= deadline {
                // Each worker closes its sessions with "GOAWAY timeout"; the closes get
                // CLOSE_GRACE to reach the peers before the server shuts down.
                relay.drain.close_all();
                for link in &relay.links {
                    link.wake();
                }
                let closing = Instant::now();
                while http.state.live_sessions() > 0 && closing.elapsed() < CLOSE_GRACE {
                    std::thread::sleep(CONTROL_TICK);
                }
                tracing::info!(elapsed = ?started.elapsed(), forced = left, "drain deadline force-closed sessions; exiting");
                break 'control;
            }
        }
        if !server.workers_alive()
            || relay
                .upstream
                .as_ref()
                .is_some_and(|upstream| !upstream.workers_alive())
        {
            anyhow::bail!("a worker thread stopped; exiting so the service manager restarts us");
        }
        if let Some(interval) = watchdog
            && last_ping.elapsed() >= interval
        {
            notify::watchdog();
            last_ping = Instant::now();
        }
        std::thread::sleep(CONTROL_TICK);
    }
    // STOPPING=1 went out with the first signal, before the drain.
    http.stop();
    // The links first: peers see them close before the sessions they feed.
    if let Some(upstream) = relay.upstream {
        upstream.shutdown();
    }
    relay.handle.shutdown();
    Ok(())
}

/// `host:port` a local client can dial: a wildcard bind is reachable on localhost.
fn client_authority(addr: SocketAddr) -> String {
    match addr.ip() {
        ip if ip.is_unspecified() => format!("localhost:{}", addr.port()),
        std::net::IpAddr::V6(ip) => format!("[{ip}]:{}", addr.port()),
        std::net::IpAddr::V4(ip) => format!("{ip}:{}", addr.port()),
    }
}

/// SIGHUP: re-read and re-validate the file, then reload the `[auth]` keys and public
/// grants and the certificate (which `/certificate.sha256` follows). A broken file, or
/// keys that do not load, are reported and what runs stays in force; sessions already
/// admitted keep running either way.
fn reload(
    source: &Source,
    overrides: &[config::args::Override],
    server: &quic_io::ServerHandle,
    auth: &auth::Authenticator,
    http: &control::ControlState,
) {
    let Source::File(path) = source else {
        tracing::info!("SIGHUP: running on the embedded default; nothing to reload");
        return;
    };
    notify::reloading();
    // The flags and variables still apply on top of the re-read file.
    match config::load_with(Some(path), overrides) {
        Ok(loaded) => {
            tracing::info!(config = %path.display(), "SIGHUP: configuration re-read; changes other than [auth] keys and public access and certificates need a restart");
            match auth.reload(&loaded.config.auth) {
                Ok(()) => tracing::info!(
                    "SIGHUP: [auth] reloaded for new sessions; admitted sessions keep their grants"
                ),
                Err(err) => tracing::error!("SIGHUP: keeping the current [auth] keys: {err}"),
            }
            match server.reload_tls() {
                Ok(fingerprint) => {
                    tracing::info!(certificate_sha256 = %fingerprint, "SIGHUP: certificate reloaded for new connections");
                    http.set_fingerprint(fingerprint);
                }
                Err(err) => tracing::error!("SIGHUP: keeping the current certificate: {err}"),
            }
            if let Some(https) = &http.https {
                match https.reload() {
                    Ok(fingerprint) => {
                        tracing::info!(https_leaf_sha256 = %fingerprint, "SIGHUP: [web.https] reloaded")
                    }
                    Err(err) => tracing::error!(
                        "SIGHUP: keeping the current [web.https] certificate: {err:#}"
                    ),
                }
            }
        }
        Err(err) => tracing::error!("SIGHUP: keeping the running configuration: {err}"),
    }
    notify::ready("reloaded");
}
