//! moq-relay's flags and `MOQ_*` variables, both generations, through the real binary:
//! each form prints the same effective configuration (`--print-config`) as the file that
//! says the same, flag beats variable beats file, and a bad flag is named.

mod common;

use std::process::{Command, Output};

use tempfile::TempDir;

/// The binary with no `MOQ_*` variable from the test's own environment.
fn relayd() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_moq-relayd"));
    command.env_remove("NOTIFY_SOCKET").env_remove("RUST_LOG");
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("MOQ_") {
            command.env_remove(name);
        }
    }
    command
}

fn printed(output: Output) -> String {
    assert!(
        output.status.success(),
        "exit {:?}: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// `--print-config` of `file_text` alone.
fn print_file(file_text: &str) -> String {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("relay.toml");
    std::fs::write(&path, file_text).unwrap();
    printed(relayd().arg("--print-config").arg(&path).output().unwrap())
}

fn print_flags(args: &[&str], env: &[(&str, &str)]) -> String {
    let mut command = relayd();
    command.arg("--print-config").args(args);
    for (name, value) in env {
        command.env(name, value);
    }
    printed(command.output().unwrap())
}

const FILE_014: &str = "drain_timeout = \"3s\"\n[server]\nbind = \"127.0.0.1:0\"\n[server.tls]\ngenerate = [\"localhost\", \"relay.test\"]\n[server.quic]\nmax_streams = 500\n[auth]\npublic = \"anon\"\n[runtime]\nworkers = 1\npin = false\n[internal]\nlisten = \"127.0.0.1:0\"\n";

const FILE_017: &str = "drain_timeout = \"4s\"\n[listen]\nbind = \"127.0.0.1:0\"\n[listen.tls]\ngenerate = [\"localhost\"]\n[quic]\nidle_timeout = \"7s\"\nkeep_alive = \"2s\"\n[auth]\npublic = \"anon/**\"\n[runtime]\nworkers = 1\npin = false\n[web.http]\nlisten = \"127.0.0.1:0\"\n[stats]\nnode = \"edge\"\n";

#[test]
fn the_014_flags_and_variables_equal_the_014_file() {
    let file = print_file(FILE_014);
    let flags = print_flags(
        &[
            "--drain-timeout=3s",
            "--server-bind",
            "127.0.0.1:0",
            "--tls-generate",
            "localhost,relay.test",
            "--server-max-streams",
            "500",
            "--auth-public",
            "anon",
            "--runtime-workers",
            "1",
            "--runtime-pin=false",
            "--internal-listen",
            "127.0.0.1:0",
        ],
        &[],
    );
    assert_eq!(flags, file);
    // 0.14's own variable names, exceptions included (--tls-* read MOQ_SERVER_TLS_*).
    let env = print_flags(
        &[],
        &[
            ("MOQ_DRAIN_TIMEOUT", "3s"),
            ("MOQ_SERVER_BIND", "127.0.0.1:0"),
            ("MOQ_SERVER_TLS_GENERATE", "localhost,relay.test"),
            ("MOQ_SERVER_QUIC_MAX_STREAMS", "500"),
            ("MOQ_AUTH_PUBLIC", "anon"),
            ("MOQ_RUNTIME_WORKERS", "1"),
            ("MOQ_RUNTIME_PIN", "false"),
            ("MOQ_INTERNAL_LISTEN", "127.0.0.1:0"),
        ],
    );
    assert_eq!(env, file);
}

#[test]
fn the_017_flags_and_variables_equal_the_017_file() {
    let file = print_file(FILE_017);
    let flags = print_flags(
        &[
            "--drain-timeout",
            "4s",
            "--listen",
            "127.0.0.1:0",
            "--listen-tls-generate",
            "localhost",
            "--quic-idle-timeout",
            "7s",
            "--quic-keep-alive",
            "2s",
            "--auth-public",
            "anon/**",
            "--runtime-workers",
            "1",
            "--runtime-pin=false",
            "--web-http-listen",
            "127.0.0.1:0",
            "--stats-node",
            "edge",
        ],
        &[],
    );
    assert_eq!(flags, file);
    let env = print_flags(
        &[],
        &[
            ("MOQ_DRAIN_TIMEOUT", "4s"),
            ("MOQ_LISTEN", "127.0.0.1:0"),
            ("MOQ_LISTEN_TLS_GENERATE", "localhost"),
            ("MOQ_QUIC_IDLE_TIMEOUT", "7s"),
            ("MOQ_QUIC_KEEP_ALIVE", "2s"),
            ("MOQ_AUTH_PUBLIC", "anon/**"),
            ("MOQ_RUNTIME_WORKERS", "1"),
            ("MOQ_RUNTIME_PIN", "false"),
            ("MOQ_WEB_HTTP_LISTEN", "127.0.0.1:0"),
            ("MOQ_STATS_NODE", "edge"),
        ],
    );
    assert_eq!(env, file);
}

/// A flag of the other generation lands in the table the file uses: `--listen` over a
/// `[server]` file, `--server-bind` over a `[listen]` one.
#[test]
fn a_flag_of_either_generation_overrides_a_file_of_the_other() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("relay.toml");
    std::fs::write(&path, FILE_014).unwrap();
    let overridden = printed(
        relayd()
            .args(["--print-config", "--listen", "127.0.0.1:7"])
            .arg(&path)
            .output()
            .unwrap(),
    );
    assert_eq!(
        overridden,
        print_file(&FILE_014.replace("127.0.0.1:0\"\n[server.tls]", "127.0.0.1:7\"\n[server.tls]"))
    );
    std::fs::write(&path, FILE_017).unwrap();
    let overridden = printed(
        relayd()
            .args(["--print-config", "--server-bind", "127.0.0.1:8"])
            .arg(&path)
            .output()
            .unwrap(),
    );
    assert_eq!(
        overridden,
        print_file(&FILE_017.replace("127.0.0.1:0\"\n[listen.tls]", "127.0.0.1:8\"\n[listen.tls]"))
    );
}

#[test]
fn a_flag_beats_its_variable_which_beats_the_file() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("relay.toml");
    std::fs::write(&path, FILE_017).unwrap();
    let idle = |args: &[&str], env: Option<&str>| {
        let mut command = relayd();
        command.arg("--print-config").args(args).arg(&path);
        if let Some(value) = env {
            command.env("MOQ_QUIC_IDLE_TIMEOUT", value);
        }
        let text = printed(command.output().unwrap());
        let config: toml::Table = text.parse().unwrap();
        config["quic"]["idle_timeout"].as_str().unwrap().to_owned()
    };
    assert_eq!(idle(&[], None), "7s");
    assert_eq!(idle(&[], Some("8s")), "8s");
    assert_eq!(idle(&["--quic-idle-timeout", "9s"], Some("8s")), "9s");
}

#[test]
fn unknown_flags_and_bad_values_are_named() {
    let output = relayd().args(["--server-bnd", "x"]).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let message = String::from_utf8_lossy(&output.stderr);
    assert!(message.contains("--server-bnd"), "{message}");

    let output = relayd()
        .args(["--check", "--runtime-workers", "two"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let message = String::from_utf8_lossy(&output.stderr);
    assert!(message.contains("--runtime-workers"), "{message}");

    // A value of the right type that the file rules refuse names its flag or variable.
    let output = relayd()
        .args([
            "--check",
            "--tls-generate",
            "localhost",
            "--server-bind",
            "not an address",
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let message = String::from_utf8_lossy(&output.stderr);
    assert!(message.contains("--server-bind"), "{message}");
    let output = relayd()
        .args(["--check", "--tls-generate", "localhost"])
        .env("MOQ_QUIC_KEEP_ALIVE", "soon")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let message = String::from_utf8_lossy(&output.stderr);
    assert!(message.contains("MOQ_QUIC_KEEP_ALIVE"), "{message}");
}

/// QUIC-LB and preferred addresses from 0.17's flags and variables: accepted, and a
/// value QUIC-LB refuses is named by the flag or variable that set it.
#[test]
fn quic_lb_and_preferred_address_flags_are_checked_and_named() {
    let check = |args: &[&str], env: &[(&str, &str)]| {
        let mut command = relayd();
        command
            .args(["--check", "--listen-tls-generate", "localhost"])
            .args(args);
        for (name, value) in env {
            command.env(name, value);
        }
        let output = command.output().unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let (code, message) = check(
        &[
            "--listen-quic-lb-id",
            "0a0b",
            "--listen-quic-lb-nonce",
            "6",
            "--listen-preferred-v4",
            "192.0.2.1:443",
        ],
        &[],
    );
    assert_eq!(code, Some(0), "{message}");
    let (code, message) = check(
        &["--listen-quic-lb-id", "0a", "--listen-quic-lb-nonce", "3"],
        &[],
    );
    assert_eq!(code, Some(2));
    assert!(message.contains("--listen-quic-lb-nonce"), "{message}");
    let (code, message) = check(&[], &[("MOQ_LISTEN_QUIC_LB_ID", "not hex")]);
    assert_eq!(code, Some(2));
    assert!(message.contains("MOQ_LISTEN_QUIC_LB_ID"), "{message}");
    let (code, message) = check(&["--listen-preferred-v4", "[::1]:443"], &[]);
    assert_eq!(code, Some(2));
    assert!(message.contains("--listen-preferred-v4"), "{message}");
}

/// A container configured only by variables starts and serves.
#[test]
fn the_relay_starts_from_variables_alone() {
    let mut command = relayd();
    command
        .env("MOQ_LISTEN", "127.0.0.1:0")
        .env("MOQ_LISTEN_TLS_GENERATE", "localhost")
        .env("MOQ_AUTH_PUBLIC", "**")
        .env("MOQ_RUNTIME_WORKERS", "1")
        .env("MOQ_RUNTIME_PIN", "false");
    let relay = common::Relay::spawn(command);
    let line = relay.wait_for_line("serving on udp://");
    assert!(line.contains("<flags and environment>"), "{line}");
    assert!(common::listen_address(&line).ip().is_loopback());
}
