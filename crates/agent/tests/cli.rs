//! The binary's surfaces: `snapshot --json` and `config default`.

use std::process::Command;

fn agent() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fleetmon-agent"))
}

#[test]
fn snapshot_prints_the_design_names_as_a_json_array() {
    let f = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pi4-ups");
    let out = agent()
        .args(["snapshot", "--json", "--cpu-window", "10ms"])
        .arg("--proc-root")
        .arg(f.join("proc"))
        .arg("--sys-root")
        .arg(f.join("sys"))
        .arg("--etc-root")
        .arg(f.join("etc"))
        .arg("--host-root")
        .arg(f.join("host"))
        .arg("--firmware-file")
        .arg(f.join("firmware-version"))
        .output()
        .expect("cli test");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("cli test");
    let entries = v.as_array().expect("cli test");
    let find = |metric: &str| {
        entries
            .iter()
            .find(|e| e["metric"] == metric)
            .unwrap_or_else(|| panic!("{metric} missing"))
    };
    assert_eq!(find("battery_charge_ratio")["labels"]["battery"], "ups-hat");
    assert_eq!(find("battery_charge_ratio")["value"], 0.76);
    assert_eq!(
        find("device_info")["labels"]["firmware"],
        "2024-05-24T15:30:10 version 4942b7633c0ff1af1ee95a51a33b56a9dae47529 (clean)"
    );
    for e in entries {
        let keys: Vec<&String> = e.as_object().expect("cli test").keys().collect();
        assert_eq!(keys, ["labels", "metric", "value"]);
    }
}

#[test]
fn the_default_config_printed_parses_back() {
    let out = agent()
        .args(["config", "default"])
        .output()
        .expect("cli test");
    assert!(out.status.success());
    let dir = tempfile::tempdir().expect("cli test");
    let path = dir.path().join("agent.toml");
    std::fs::write(&path, &out.stdout).expect("cli test");
    let check = agent()
        .args(["config", "check", "--config"])
        .arg(&path)
        .output()
        .expect("cli test");
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    // An unknown key is named.
    std::fs::write(&path, "intervl = \"5s\"\n").expect("cli test");
    let bad = agent()
        .args(["config", "check", "--config"])
        .arg(&path)
        .output()
        .expect("cli test");
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("intervl"));
}

#[test]
fn environment_variables_override_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.toml");
    std::fs::write(&path, "device_id = \"good-id\"\n").unwrap();
    // The env value wins over the file, and is validated like any other: the error names
    // the key.
    let out = agent()
        .args(["run", "--config"])
        .arg(&path)
        .env("FLEETMON_AGENT_DEVICE_ID", "bad id")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("`device_id`") && stderr.contains("bad id"),
        "{stderr}"
    );
    // A flag wins over the environment.
    let out = agent()
        .args(["run", "--device-id", "also bad", "--config"])
        .arg(&path)
        .env("FLEETMON_AGENT_DEVICE_ID", "bad id")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("also bad"));
}
