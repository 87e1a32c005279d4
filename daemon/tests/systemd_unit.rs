//! The packaged systemd unit is one `systemd-analyze verify` accepts.

use std::path::Path;
use std::process::Command;

#[test]
fn systemd_unit_passes_systemd_analyze_verify() {
    let unit = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../systemd/moq-relayd.service"),
    )
    .unwrap();
    // verify insists that ExecStart exists; point it at the binary under test instead of
    // the installed path, and change nothing else.
    let installed = "/usr/bin/moq-relayd";
    assert!(unit.contains(&format!("ExecStart={installed} /etc/moq-relayd/relay.toml")));
    let dir = tempfile::TempDir::new().unwrap();
    let copy = dir.path().join("moq-relayd.service");
    std::fs::write(
        &copy,
        unit.replace(installed, env!("CARGO_BIN_EXE_moq-relayd")),
    )
    .unwrap();

    let output = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .expect("systemd-analyze is needed (Debian: apt-get install systemd; .ci/run installs it)");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "systemd-analyze verify failed:\n{stderr}"
    );
    assert!(
        stderr.trim().is_empty(),
        "systemd-analyze verify warned:\n{stderr}"
    );
}
