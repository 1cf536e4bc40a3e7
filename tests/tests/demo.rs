//! `faultbridge demo`, the newcomer's first run, through the real binary:
//! it announces its deliberate malformed record, shows printable details as
//! text, and its summary adds up.
#![allow(clippy::unwrap_used)]

use faultbridge_tests::{binary, private_netns};
use std::process::Command;

#[test]
fn the_demo_announces_its_malformed_record_and_its_summary_adds_up() {
    private_netns();
    let out = Command::new(binary())
        .args(["demo", "--flood", "2000", "--rate", "100000"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The malformed record is announced before it is sent, with its sequence.
    let announced = text
        .find("on purpose, the simulator now sends record #4 with a wrong magic number")
        .unwrap_or_else(|| panic!("no announcement:\n{text}"));
    let lost = text
        .find("LOST  1 record(s) of expdrv, sequence 4..=4")
        .unwrap_or_else(|| panic!("no loss line:\n{text}"));
    assert!(announced < lost, "{text}");
    // Printable details are text, not hex.
    assert!(
        text.contains(
            "host3        error   event 0x00020003  source expdrv  detail \"target 0:0:1\""
        ),
        "{text}"
    );
    // The summary explains the accounting, and the numbers add up.
    let line = text
        .lines()
        .find(|l| l.contains("how it adds up:"))
        .unwrap_or_else(|| panic!("no accounting line:\n{text}"));
    let nums: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|w| !w.is_empty())
        .take(4)
        .map(|w| w.parse().unwrap())
        .collect();
    let [sent, received, lost, malformed] = nums[..] else {
        panic!("{line}")
    };
    assert_eq!(sent, 2005, "{line}");
    assert_eq!(received + lost, sent, "{line}");
    assert_eq!(malformed, 1, "{line}");
    assert!(lost >= 1, "{line}");
    assert!(line.contains("counted as malformed"), "{line}");
    assert!(line.contains("counted as lost too"), "{line}");
}
