use super::*;
use proptest::prelude::*;

fn with_name(name: [u8; 32]) -> ExpdrvInfoRaw {
    ExpdrvInfoRaw {
        abi_version: 1,
        record_max: 65535,
        driver_name: name,
        ..ExpdrvInfoRaw::default()
    }
}

#[test]
fn the_driver_name_ends_at_its_nul_or_fills_the_field() {
    let mut name = [0u8; 32];
    name[..6].copy_from_slice(b"expdrv");
    name[7] = b'x'; // after the NUL: not part of the name
    assert_eq!(with_name(name).driver_name(), "expdrv");
    assert_eq!(with_name([b'd'; 32]).driver_name(), "d".repeat(32));
    let mut bad = [0u8; 32];
    bad[..3].copy_from_slice(b"a\xffb");
    assert_eq!(with_name(bad).driver_name(), "a\u{fffd}b");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn any_driver_name_field_reads_without_panic(name in any::<[u8; 32]>()) {
        let got = with_name(name).driver_name();
        prop_assert!(!got.contains('\0'));
        let end = name.iter().position(|&b| b == 0).unwrap_or(32);
        if let Ok(s) = std::str::from_utf8(&name[..end]) {
            prop_assert_eq!(got, s);
        }
    }
}
