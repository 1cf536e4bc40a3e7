//! `faultbridge config check` through the real binary: the bounds of every
//! duration key, type mistakes in TOML's words, and what a valid file prints.
#![allow(clippy::unwrap_used)]

use faultbridge_tests::{TempDir, binary};
use std::process::Command;

/// Runs `faultbridge config check` on `text`; (success, stdout, stderr).
fn check(text: &str) -> (bool, String, String) {
    let dir = TempDir::new("config-check");
    let file = dir.write("c.toml", text);
    let out = Command::new(binary())
        .args(["config", "check"])
        .arg(&file)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `text` is refused with `want` at `c.toml:LINE:COLUMN`.
fn refused(text: &str, want: &str) {
    let (ok, _, err) = check(text);
    assert!(!ok, "accepted:\n{text}");
    assert!(
        err.contains(&format!("c.toml:{want}")),
        "for\n{text}\nwanted c.toml:{want}\ngot: {err}"
    );
}

fn accepted(text: &str) -> String {
    let (ok, out, err) = check(text);
    assert!(ok, "refused:\n{text}\n{err}");
    out
}

const MONITOR: &str = "[[monitor]]\nname = \"m\"\ncategory = \"NIC\"\n";

#[test]
fn the_timeout_that_once_panicked_the_runner_is_refused_with_its_line() {
    refused(
        &format!("{MONITOR}timeout = \"18446744073709551615s\"\n"),
        "4:11: timeout = \"18446744073709551615s\": must be in 1ms..=24h",
    );
    refused(
        &format!("{MONITOR}timeout = \"18446744073709551615h\"\n"),
        "4:11: \"18446744073709551615h\" is too long a duration",
    );
    refused(
        &format!("{MONITOR}timeout = \"18446744073709551616s\"\n"),
        "4:11: \"18446744073709551616s\" is not a duration",
    );
    refused(
        &format!("{MONITOR}timeout = \"0s\"\n"),
        "4:11: timeout = \"0s\": must be in 1ms..=24h",
    );
    refused(
        &format!("{MONITOR}timeout = \"1441m\"\n"),
        "4:11: timeout = \"1441m\": must be in 1ms..=24h",
    );
    accepted(&format!("{MONITOR}timeout = \"24h\"\n"));
}

#[test]
fn grace_period_and_threshold_window_stop_at_seven_days() {
    refused(
        &format!("{MONITOR}grace_period = \"8d\"\n"),
        "4:16: grace_period = \"8d\": must be in 0s..=7d",
    );
    refused(
        &format!("{MONITOR}grace_period = \"18446744073709551615s\"\n"),
        "4:16: grace_period",
    );
    accepted(&format!("{MONITOR}grace_period = \"168h\"\n"));
    refused(
        &format!("{MONITOR}threshold = {{ count = 3, window = \"604801s\" }}\n"),
        "4:35: threshold.window = \"604801s\": must be in 0s..=7d",
    );
    accepted(&format!(
        "{MONITOR}threshold = {{ count = 3, window = \"7d\" }}\n"
    ));
    refused(
        &format!("{MONITOR}threshold = {{ count = 1000001, window = \"1s\" }}\n"),
        "4:23: threshold.count = 1000001: must be in 1..=1000000",
    );
    refused(
        &format!("{MONITOR}restart_limit = 1001\n"),
        "4:17: restart_limit = 1001: must be in 0..=1000",
    );
}

#[test]
fn resync_interval_and_max_age_have_bounds() {
    refused(
        "[sources.expdrv]\nresync_interval = \"61m\"\n",
        "2:19: resync_interval = \"61m\": must be in 0s..=1h",
    );
    accepted("[sources.expdrv]\nresync_interval = \"1h\"\n");
    refused(
        "[history]\npath = \"/tmp/h.db\"\nmax_age = \"3651d\"\n",
        "3:11: max_age = \"3651d\": must be in 1m..=3650d",
    );
    refused(
        "[history]\npath = \"/tmp/h.db\"\nmax_age = \"59s\"\n",
        "3:11: max_age = \"59s\": must be in 1m..=3650d",
    );
    accepted("[history]\npath = \"/tmp/h.db\"\nmax_age = \"30d\"\n");
}

#[test]
fn counts_outside_their_bounds_are_refused() {
    refused(
        "[ingest]\nqueue = 99999999999\n",
        "2:9: queue = 99999999999: must be in 16..=16777216",
    );
    refused(
        "[actions]\nmax_concurrent = 0\n",
        "2:18: max_concurrent = 0: must be in 1..=1024",
    );
    refused(
        "[history]\nmax_rows = -1\n",
        "2:12: max_rows = -1: must be in 1..=",
    );
    refused(
        "[sources.rtnetlink]\nrecv_buffer = 4611686018427387904\n",
        "2:15: recv_buffer = 4611686018427387904: must be in 4096..=1073741824",
    );
}

#[test]
fn type_mistakes_speak_toml() {
    refused(
        "[sources.expdrv]\nnetlink_group = \"1\"\n",
        "2:17: expected an integer, found a string \"1\"",
    );
    refused(
        "[sources.expdrv]\nnetlink_group = 1.5\n",
        "2:17: expected an integer, found a float 1.5",
    );
    refused(
        "[sources.rtnetlink]\ninclude = \"eth*\"\n",
        "2:11: expected an array, found a string \"eth*\"",
    );
    refused(
        &format!("{MONITOR}threshold = 3\n"),
        "4:13: expected a table, found an integer 3",
    );
    let (_, _, err) = check("[sources.expdrv]\nnetlink_group = \"1\"\n");
    assert!(!err.contains("i64"), "{err}");
}

#[test]
fn accept_is_parsed_and_printed_and_the_bus_is_named_plainly() {
    let out = accepted("bus = \"system\"\n");
    assert!(out.contains("bus system,"), "{out}");
    assert!(out.contains("accept kernel"), "{out}");
    assert!(!out.contains("System"), "a Rust debug name leaked: {out}");
    let out = accepted("bus = \"none\"\n[sources.expdrv]\naccept = \"root\"\n");
    assert!(
        out.contains("bus none,") && out.contains("accept root"),
        "{out}"
    );
    let out = accepted("bus = \"unix:path=/run/x/bus\"\n");
    assert!(out.contains("bus unix:path=/run/x/bus,"), "{out}");
    refused(
        "[sources.expdrv]\naccept = \"everyone\"\n",
        "2:10: unknown accept \"everyone\": expected kernel, root or any",
    );
}
