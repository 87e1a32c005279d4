//! The command line and configuration, through the real `moq-relayd` binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tempfile::TempDir;

fn relayd() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_moq-relayd"));
    command.env_remove("NOTIFY_SOCKET").env_remove("RUST_LOG");
    command
}

fn write_config(dir: &TempDir, name: &str, text: &str) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn check(path: &Path) -> Output {
    relayd().arg("--check").arg(path).output().unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A config that passes on any host: loopback, ephemeral port, generated certificate.
const MINIMAL: &str = "[server]\nbind = \"127.0.0.1:0\"\ntls.generate = [\"localhost\"]\n";

#[test]
fn unknown_key_exits_2_naming_file_position_and_key() {
    let dir = TempDir::new().unwrap();
    let path = write_config(
        &dir,
        "relay.toml",
        &format!("{MINIMAL}\n[socket]\nrecv_bufer = 1048576\n"),
    );
    let output = check(&path);
    assert_eq!(output.status.code(), Some(2));
    let message = stderr(&output);
    assert!(
        message.contains(&format!("{}:6:1", path.display())),
        "{message}"
    );
    assert!(message.contains("socket.recv_bufer"), "{message}");
    assert!(
        message.contains("recv_buffer"),
        "the message lists the keys that exist: {message}"
    );
}

#[test]
fn wrong_type_exits_2_naming_key_and_expectation() {
    let dir = TempDir::new().unwrap();
    let path = write_config(
        &dir,
        "relay.toml",
        &format!("{MINIMAL}\n[quic]\nidle_timeout = 30\n"),
    );
    let output = check(&path);
    assert_eq!(output.status.code(), Some(2));
    let message = stderr(&output);
    assert!(message.contains("quic.idle_timeout"), "{message}");
    assert!(message.contains("expected a duration"), "{message}");
    assert!(
        message.contains(":6:"),
        "points at the line of the value: {message}"
    );
}

#[test]
fn missing_certificate_file_exits_2_naming_the_path() {
    let dir = TempDir::new().unwrap();
    let missing = dir.path().join("missing-cert.pem");
    let key = write_config(&dir, "key.pem", "not checked before the certificate");
    let text = format!(
        "[server]\nbind = \"127.0.0.1:0\"\n[server.tls]\ncert = \"{}\"\nkey = \"{}\"\n",
        missing.display(),
        key.display()
    );
    let path = write_config(&dir, "relay.toml", &text);
    let output = check(&path);
    assert_eq!(output.status.code(), Some(2));
    let message = stderr(&output);
    assert!(message.contains("server.tls.cert"), "{message}");
    assert!(
        message.contains(&missing.display().to_string()),
        "{message}"
    );
}

#[test]
fn more_workers_than_allowed_cpus_exits_2() {
    let cpus = std::thread::available_parallelism().unwrap().get();
    let dir = TempDir::new().unwrap();
    let path = write_config(
        &dir,
        "relay.toml",
        &format!("{MINIMAL}\n[runtime]\nworkers = {}\n", cpus + 1),
    );
    let output = check(&path);
    assert_eq!(output.status.code(), Some(2));
    let message = stderr(&output);
    assert!(message.contains("runtime.workers"), "{message}");
    assert!(message.contains(&format!("only {cpus}")), "{message}");
}

#[test]
fn pinning_to_a_cpu_outside_the_affinity_set_exits_2() {
    let dir = TempDir::new().unwrap();
    let path = write_config(
        &dir,
        "relay.toml",
        &format!("{MINIMAL}\n[runtime]\ncpus = [4095]\n"),
    );
    let output = check(&path);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("runtime.cpus"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn file_flag_and_positional_argument_are_equivalent() {
    let dir = TempDir::new().unwrap();
    let path = write_config(
        &dir,
        "relay.toml",
        &format!("{MINIMAL}\n[limits]\nconnections_per_worker = 77\n"),
    );
    let positional = relayd().arg("--print-config").arg(&path).output().unwrap();
    let flag = relayd()
        .arg("--print-config")
        .arg("--file")
        .arg(&path)
        .output()
        .unwrap();
    assert!(positional.status.success() && flag.status.success());
    assert_eq!(positional.stdout, flag.stdout);
    assert!(String::from_utf8_lossy(&flag.stdout).contains("connections_per_worker = 77"));

    let broken = write_config(&dir, "broken.toml", "[server\n");
    let positional = relayd().arg("--check").arg(&broken).output().unwrap();
    let flag = relayd()
        .arg("--check")
        .arg("--file")
        .arg(&broken)
        .output()
        .unwrap();
    assert_eq!(positional.status.code(), Some(2));
    assert_eq!(flag.status.code(), Some(2));
}

#[test]
fn print_config_round_trips_through_check() {
    let dir = TempDir::new().unwrap();
    let original = write_config(
        &dir,
        "relay.toml",
        &format!(
            "{MINIMAL}\n[auth.public]\nsubscribe = \"demo\"\n[cluster]\nconnect = \"https://up.example/?cost=3\"\nlinger = \"2s\"\n[socket]\nrecv_buffer = \"4MiB\"\n[server.quic]\ncongestion_control = \"delay\"\n"
        ),
    );
    let first = relayd()
        .arg("--print-config")
        .arg(&original)
        .output()
        .unwrap();
    assert!(first.status.success(), "{}", stderr(&first));
    let printed = write_config(
        &dir,
        "printed.toml",
        &String::from_utf8(first.stdout.clone()).unwrap(),
    );
    let checked = check(&printed);
    assert!(checked.status.success(), "{}", stderr(&checked));

    // Printing the printed file changes nothing: every default was already written.
    let second = relayd()
        .arg("--print-config")
        .arg(&printed)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&first.stdout),
        String::from_utf8_lossy(&second.stdout)
    );
    let text = String::from_utf8_lossy(&second.stdout);
    assert!(text.contains("recv_buffer = 4194304"), "{text}");
    assert!(
        text.contains("congestion = \"bbr\""),
        "delay family means BBR: {text}"
    );
    assert!(text.contains("linger = \"2s\""), "{text}");
}

#[test]
fn embedded_default_is_localhost_self_signed_and_public() {
    let output = relayd().arg("--print-config").output().unwrap();
    assert!(output.status.success());
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("bind = \"127.0.0.1:4443\""), "{text}");
    assert!(text.contains("generate = [\"localhost\"]"), "{text}");
    assert!(
        text.contains("[auth.public]\nsubscribe = [\"\"]\npublish = [\"\"]"),
        "{text}"
    );
}

#[test]
fn explicit_file_without_auth_section_has_no_anonymous_access() {
    let dir = TempDir::new().unwrap();
    let path = write_config(&dir, "relay.toml", MINIMAL);
    let output = relayd().arg("--print-config").arg(&path).output().unwrap();
    assert!(output.status.success());
    assert!(!String::from_utf8_lossy(&output.stdout).contains("[auth.public]"));
}

#[test]
fn moq_relay_files_parse_unchanged() {
    // moq-relay's dev-branch table names, dotted keys, an unknown [auth] key (ignored by
    // moq-relay) and sections whose features are not built here yet.
    let dir = TempDir::new().unwrap();
    let path = write_config(
        &dir,
        "relay.toml",
        "[listen]\nbind = \"127.0.0.1:0\"\ntls.generate = \"localhost\"\n\
         [web.http]\nlisten = \"127.0.0.1:0\"\n\
         [auth]\npublic = \"\"\nsomething_new = true\n\
         [stats]\nenabled = true\nnode = \"local/host\"\n\
         [iroh]\nenabled = false\nsecret = \"./iroh-secret.key\"\n\
         [cluster]\nid = 200\nlinger = \"5s\"\n",
    );
    let output = check(&path);
    assert!(output.status.success(), "{}", stderr(&output));
}

#[test]
fn example_config_passes_check() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/relay.toml");
    let output = check(&example);
    assert!(output.status.success(), "{}", stderr(&output));
}

#[test]
fn conflicting_auth_keys_exit_2() {
    let dir = TempDir::new().unwrap();
    let path = write_config(
        &dir,
        "relay.toml",
        &format!("{MINIMAL}\n[auth]\nauth_api = \"https://auth.example/\"\npublic = \"\"\n"),
    );
    let output = check(&path);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("auth.auth_api"),
        "{}",
        stderr(&output)
    );
}
