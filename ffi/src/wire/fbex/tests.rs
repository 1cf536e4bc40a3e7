use super::*;
use proptest::prelude::*;

fn failover_eth0() -> ExitBlock<'static> {
    ExitBlock {
        action_code: action::FAILOVER,
        prior_action_code: 0,
        restarts_done: 1,
        restart_limit: 2,
        flags: FBEX_F_OUTSIDE_SERVER_GROUP,
        sequence: 0x1122_3344_5566_7788,
        timestamp_ns: 99,
        category: 1,
        severity: 3,
        event_code: 0x0001_0001,
        device_index: 4,
        monitor_name: "mrw1",
        recovery_target: "failover1",
        category_name: "NIC",
        keyword: "eth0",
    }
}

#[test]
fn the_block_has_the_fixed_offsets_of_the_spec() {
    let b = failover_eth0().encode();
    assert_eq!(b.len(), 228);
    assert_eq!(u32::from_ne_bytes(b[0..4].try_into().unwrap()), 228);
    assert_eq!(u32::from_ne_bytes(b[4..8].try_into().unwrap()), 9);
    assert_eq!(
        u64::from_ne_bytes(b[24..32].try_into().unwrap()),
        0x1122_3344_5566_7788
    );
    assert_eq!(&b[56..61], b"mrw1\0");
    assert_eq!(&b[120..130], b"failover1\0");
    assert_eq!(&b[184..188], b"NIC\0");
    assert_eq!(u16::from_ne_bytes(b[216..218].try_into().unwrap()), 224);
    assert_eq!(u16::from_ne_bytes(b[218..220].try_into().unwrap()), 4);
    assert_eq!(&b[224..], b"eth0");
}

#[test]
fn an_encoded_block_parses_back_borrowing_its_strings() {
    let bytes = failover_eth0().encode();
    let b = ExitBlock::parse(&bytes).unwrap();
    assert_eq!(b, failover_eth0());
    assert_eq!(b.keyword.as_ptr(), bytes[224..].as_ptr());
    assert_eq!(b.monitor_name.as_ptr(), bytes[56..].as_ptr());
    // Without a keyword: offset 0, the block ends after the fixed part.
    let none = ExitBlock {
        keyword: "",
        ..failover_eth0()
    }
    .encode();
    assert_eq!(none.len(), FBEX_FIXED_LEN);
    assert_eq!(ExitBlock::parse(&none).unwrap().keyword, "");
    // Bytes after the block are not part of it.
    let mut more = bytes.clone();
    more.extend_from_slice(b"\xff\xff");
    assert_eq!(ExitBlock::parse(&more), Ok(failover_eth0()));
}

#[test]
fn every_malformed_block_is_refused_with_its_reason() {
    let good = failover_eth0().encode();
    let with = |at: usize, bytes: &[u8]| {
        let mut v = good.clone();
        v[at..at + bytes.len()].copy_from_slice(bytes);
        v
    };
    assert_eq!(
        ExitBlock::parse(&good[..223]),
        Err(FbexError::Short { got: 223 })
    );
    assert_eq!(
        ExitBlock::parse(&good[..226]),
        Err(FbexError::Truncated {
            length: 228,
            available: 226
        })
    );
    assert_eq!(
        ExitBlock::parse(&with(218, &1024u16.to_ne_bytes())),
        Err(FbexError::KeywordTooLong { len: 1024 })
    );
    // The length must be the fixed part plus the keyword.
    assert_eq!(
        ExitBlock::parse(&with(0, &229u32.to_ne_bytes())),
        Err(FbexError::BadLayout {
            length: 229,
            offset: 224,
            len: 4
        })
    );
    // The keyword starts right after the fixed part, or the offset is 0 and
    // there is none.
    assert_eq!(
        ExitBlock::parse(&with(216, &0u16.to_ne_bytes())),
        Err(FbexError::BadLayout {
            length: 228,
            offset: 0,
            len: 4
        })
    );
    let mut none = ExitBlock {
        keyword: "",
        ..failover_eth0()
    }
    .encode();
    none[216..218].copy_from_slice(&224u16.to_ne_bytes());
    assert_eq!(
        ExitBlock::parse(&none),
        Err(FbexError::BadLayout {
            length: 224,
            offset: 224,
            len: 0
        })
    );
    assert_eq!(
        ExitBlock::parse(&with(52, &[1])),
        Err(FbexError::ReservedNotZero { at: 52, got: 1 })
    );
    assert_eq!(
        ExitBlock::parse(&with(220, &[0, 0, 0, 0x80])),
        Err(FbexError::ReservedNotZero {
            at: 220,
            got: u32::from_ne_bytes([0, 0, 0, 0x80])
        })
    );
    // A name without a NUL, with bytes after its NUL, or not UTF-8.
    assert_eq!(
        ExitBlock::parse(&with(56, &[b'x'; 64])),
        Err(FbexError::BadName {
            field: "monitor name"
        })
    );
    assert_eq!(
        ExitBlock::parse(&with(130, b"x")),
        Err(FbexError::BadName {
            field: "recovery target"
        })
    );
    assert_eq!(
        ExitBlock::parse(&with(184, b"\xff")),
        Err(FbexError::BadName {
            field: "category name"
        })
    );
    assert_eq!(
        ExitBlock::parse(&with(225, b"\xc3")),
        Err(FbexError::KeywordNotUtf8)
    );
}

/// Found by the `fbex` fuzz target: a name holding a NUL was copied whole,
/// so the field's padding held the bytes after the NUL, which the spec's
/// "NUL-padded" does not allow and a strict reader refuses. The name now
/// ends at the NUL.
#[test]
fn a_name_with_a_nul_is_encoded_up_to_the_nul() {
    let bytes = ExitBlock {
        monitor_name: "mrw1\0tail",
        recovery_target: "\0x",
        ..failover_eth0()
    }
    .encode();
    assert!(bytes[60..120].iter().all(|&b| b == 0));
    let b = ExitBlock::parse(&bytes).unwrap();
    assert_eq!((b.monitor_name, b.recovery_target), ("mrw1", ""));
}

/// Found with the same target: a name or keyword longer than its field was
/// cut at a byte count, which can split a UTF-8 character, and an exit
/// program decoding the field as text then fails. The cut now falls
/// between two characters.
#[test]
fn a_long_name_or_keyword_is_cut_between_two_characters() {
    // 62 ASCII bytes, then a 3-byte character that would end at byte 65.
    let name = format!("{}日本", "n".repeat(62));
    let keyword = format!("{}é", "k".repeat(1022));
    let category = format!("{}ü", "c".repeat(30));
    let bytes = ExitBlock {
        monitor_name: &name,
        recovery_target: &name,
        category_name: &category,
        keyword: &keyword,
        ..failover_eth0()
    }
    .encode();
    let b = ExitBlock::parse(&bytes).unwrap();
    assert_eq!(b.monitor_name, &name[..62]);
    assert_eq!(b.recovery_target, &name[..62]);
    assert_eq!(b.category_name, &category[..30]);
    assert_eq!(b.keyword, &keyword[..1022]);
    assert_eq!(bytes.len(), FBEX_FIXED_LEN + 1022);
}

/// What a NUL-padded field of `n` bytes holds of `s` (as the spec reads it).
fn in_field(s: &str, n: usize) -> String {
    let s = s.split('\0').next().unwrap_or_default();
    let mut end = s.len().min(n - 1);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn arbitrary_bytes_never_panic_and_reencode_exactly(
        bytes in proptest::collection::vec(any::<u8>(), 0..400),
    ) {
        if let Ok(b) = ExitBlock::parse(&bytes) {
            let len = FBEX_FIXED_LEN + b.keyword.len();
            prop_assert_eq!(b.encode(), &bytes[..len]);
        }
    }

    #[test]
    fn mutated_blocks_never_panic_and_reencode_exactly(
        flips in proptest::collection::vec((0usize..240, any::<u8>()), 0..6),
        cut in 0usize..240,
    ) {
        let mut v = failover_eth0().encode();
        v.extend_from_slice(&[0; 12]);
        for (at, b) in flips {
            if let Some(x) = v.get_mut(at) { *x = b; }
        }
        let v = &v[..v.len() - cut.min(v.len())];
        if let Ok(b) = ExitBlock::parse(v) {
            let len = FBEX_FIXED_LEN + b.keyword.len();
            prop_assert_eq!(b.encode(), &v[..len]);
        }
    }
}

proptest! {
    // Long generated strings: fewer cases keep this under a few seconds.
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn encode_then_parse_round_trips(
        codes in any::<(u32, u32, u32, u32, u32)>(),
        fields in any::<(u64, u64, u16, u16, u32, u32)>(),
        monitor_name in "\\PC{0,70}",
        recovery_target in "[a-z\0é日]{0,70}",
        category_name in "\\PC{0,40}",
        keyword in "[a-z0-9é日\0]{0,1100}",
    ) {
        let (a, p, done, limit, flags) = codes;
        let (seq, ts, cat, sev, code, dev) = fields;
        let block = ExitBlock {
            action_code: a,
            prior_action_code: p,
            restarts_done: done,
            restart_limit: limit,
            flags,
            sequence: seq,
            timestamp_ns: ts,
            category: cat,
            severity: sev,
            event_code: code,
            device_index: dev,
            monitor_name: &monitor_name,
            recovery_target: &recovery_target,
            category_name: &category_name,
            keyword: &keyword,
        };
        let bytes = block.encode();
        let back = ExitBlock::parse(&bytes);
        prop_assert!(back.is_ok(), "{:?}", back);
        let back = back.unwrap();
        let (m, r, c) = (
            in_field(&monitor_name, 64),
            in_field(&recovery_target, 64),
            in_field(&category_name, 32),
        );
        let mut k_end = keyword.len().min(FBEX_KEYWORD_MAX);
        while !keyword.is_char_boundary(k_end) { k_end -= 1; }
        let expected = ExitBlock {
            monitor_name: &m,
            recovery_target: &r,
            category_name: &c,
            keyword: &keyword[..k_end],
            ..block.clone()
        };
        prop_assert_eq!(back, expected);
    }
}
