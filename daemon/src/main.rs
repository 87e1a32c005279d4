//! The `moq-relayd` binary: command line, configuration, logging, then the control
//! thread (signals, systemd notification) while the workers serve.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

use moq_relayd::config::{self, Loaded, Source};
use moq_relayd::{auth, cpu, listen, logging, notify, support};

/// Exit status for a configuration that cannot be used (as with `--check`).
const EXIT_BAD_CONFIG: u8 = 2;

/// How often the control thread looks at signals and worker health. Signals are handled
/// within this delay; it is not on any data path.
const CONTROL_TICK: Duration = Duration::from_millis(50);

/// Media over QUIC relay: thread-per-core, a drop-in for moq-relay.
#[derive(Debug, Parser)]
#[command(name = "moq-relayd", version, about)]
struct Cli {
    /// relay.toml to run with. Without one, serve on 127.0.0.1:4443 with a generated
    /// self-signed certificate for localhost and anonymous access for everyone.
    #[arg(value_name = "CONFIG", conflicts_with = "file")]
    config: Option<PathBuf>,

    /// The same as the positional CONFIG (moq-relay's packaged unit passes `--file`).
    #[arg(long, value_name = "CONFIG")]
    file: Option<PathBuf>,

    /// Validate the configuration and exit: 0 when it is usable, 2 when not.
    #[arg(long, conflicts_with = "print_config")]
    check: bool,

    /// Print the effective configuration, every default filled in, as TOML, and exit.
    #[arg(long)]
    print_config: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let loaded = match cli.config.as_deref().or(cli.file.as_deref()) {
        Some(path) => match config::load(path) {
            Ok(loaded) => loaded,
            Err(err) => {
                eprintln!("moq-relayd: configuration error: {err}");
                return ExitCode::from(EXIT_BAD_CONFIG);
            }
        },
        None => config::load_embedded_default(),
    };

    if cli.check {
        match &loaded.source {
            Source::File(path) => println!("{}: configuration OK", path.display()),
            Source::Embedded => println!("<embedded default>: configuration OK"),
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
    match run(loaded) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(loaded: Loaded) -> anyhow::Result<()> {
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
    if auth::Authenticator::new(&config.auth).refuses_everyone() {
        tracing::warn!(
            "[auth] grants nothing (no `public`, no key): every publish and subscribe will be refused"
        );
    }
    let bind = listen::resolve_bind(config).context("cannot resolve [server] bind")?;
    let cpus = listen::worker_cpus(&config.runtime, &cpu::allowed_cpus());
    let sockets = listen::bind_reuseport(bind, cpus.len(), &config.socket)
        .with_context(|| format!("cannot bind UDP {bind}"))?;
    let local_addr = sockets.local_addr;

    match &loaded.source {
        Source::Embedded => tracing::info!(
            "no configuration file: serving on udp://{local_addr} with a self-signed certificate for localhost and anonymous access for everyone"
        ),
        Source::File(path) => {
            tracing::info!(config = %path.display(), "serving on udp://{local_addr}")
        }
    }
    tracing::info!(%local_addr, workers = cpus.len(), "listening");
    notify::ready(&format!("serving on udp://{local_addr}"));

    let watchdog = notify::watchdog_interval();
    let mut last_ping = Instant::now();
    'control: loop {
        for signal in signals.pending() {
            match signal {
                SIGHUP => reload(&loaded.source),
                _ => {
                    tracing::info!(signal, "shutting down");
                    break 'control;
                }
            }
        }
        if let Some(interval) = watchdog
            && last_ping.elapsed() >= interval
            && sockets.alive()
        {
            notify::watchdog();
            last_ping = Instant::now();
        }
        std::thread::sleep(CONTROL_TICK);
    }
    notify::stopping();
    drop(sockets);
    Ok(())
}

/// SIGHUP: re-read and re-validate the file. A broken file is reported and the running
/// configuration stays in force.
fn reload(source: &Source) {
    let Source::File(path) = source else {
        tracing::info!("SIGHUP: running on the embedded default; nothing to reload");
        return;
    };
    notify::reloading();
    match config::load(path) {
        Ok(_) => {
            tracing::info!(config = %path.display(), "SIGHUP: configuration re-read; changes other than certificates need a restart")
        }
        Err(err) => tracing::error!("SIGHUP: keeping the running configuration: {err}"),
    }
    notify::ready("reloaded");
}
