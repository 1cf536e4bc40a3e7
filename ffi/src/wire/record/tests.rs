use super::*;
use proptest::prelude::*;

fn spec<'a>(keyword: &'a [u8], detail: &'a [u8]) -> RecordSpec<'a> {
    RecordSpec {
        flags: 0,
        sequence: 42,
        timestamp_ns: 123_456_789,
        category: Category::Nic.code(),
        severity: Severity::Error.code(),
        event_code: event::NIC_LINK_DOWN,
        device_index: 3,
        keyword,
        detail,
        driver_id: 7,
    }
}

fn encode(s: &RecordSpec<'_>) -> Vec<u8> {
    let mut v = Vec::new();
    s.encode_into(&mut v);
    v
}

fn set_u16(buf: &mut [u8], at: usize, v: u16) {
    buf[at..at + 2].copy_from_slice(&v.to_ne_bytes());
}
fn set_u32(buf: &mut [u8], at: usize, v: u32) {
    buf[at..at + 4].copy_from_slice(&v.to_ne_bytes());
}

#[test]
fn a_well_formed_record_is_read_field_by_field() {
    let bytes = encode(&spec(b"eth0", b"\x01\x02\x03"));
    let r = Record::parse(&bytes).unwrap();
    assert_eq!(r.sequence(), 42);
    assert_eq!(r.timestamp_ns(), 123_456_789);
    assert_eq!(r.category(), Category::Nic);
    assert_eq!(r.severity(), Severity::Error);
    assert_eq!(r.event_code(), 0x0001_0001);
    assert_eq!(r.device_index(), 3);
    assert_eq!(r.driver_id(), 7);
    assert_eq!(r.keyword(), "eth0");
    assert_eq!(r.detail(), b"\x01\x02\x03");
    assert_eq!(r.as_bytes().len(), 64 + 4 + 3);
}

#[test]
fn the_magic_is_the_bytes_exfm_in_memory_order() {
    let bytes = encode(&spec(b"", b""));
    assert_eq!(&bytes[..4], b"EXFM");
}

#[test]
fn parse_is_correct_at_every_alignment_and_borrows_the_variable_data() {
    let rec = encode(&spec(b"host3", b"detail"));
    for shift in 0..8 {
        let mut buf = vec![0u8; shift];
        buf.extend_from_slice(&rec);
        let r = Record::parse(&buf[shift..]).unwrap();
        assert_eq!(r.sequence(), 42);
        assert_eq!(r.keyword(), "host3");
        // Borrowed, not copied: the keyword points into the input buffer.
        let base = buf[shift..].as_ptr() as usize;
        assert_eq!(r.keyword().as_ptr() as usize, base + 64);
        assert_eq!(r.detail().as_ptr() as usize, base + 64 + 5);
    }
}

#[test]
fn a_larger_header_len_is_accepted_and_its_extra_bytes_ignored() {
    let mut v = encode(&spec(b"", b""));
    v.extend_from_slice(&[0xAA; 8]); // a later minor version's fields
    v.extend_from_slice(b"sdb");
    set_u16(&mut v, 6, 72);
    set_u32(&mut v, 8, 75);
    set_u16(&mut v, 44, 72);
    set_u16(&mut v, 46, 3);
    let r = Record::parse(&v).unwrap();
    assert_eq!(r.keyword(), "sdb");
}

#[test]
fn trailing_bytes_after_total_len_are_not_part_of_the_record() {
    let mut v = encode(&spec(b"eth1", b""));
    v.extend_from_slice(&[0, 0, 0, 0]);
    assert_eq!(Record::parse(&v).unwrap().as_bytes().len(), 68);
}

#[test]
fn unknown_flag_bits_and_event_codes_are_accepted() {
    let mut s = spec(b"eth0", b"");
    s.flags = 0xFFFF_FFFF;
    s.event_code = 0x0001_7777;
    let v = encode(&s);
    let r = Record::parse(&v).unwrap();
    assert!(r.is_snapshot() && r.is_test());
    assert_eq!(r.event_code(), 0x0001_7777);
}

fn reason(bytes: &[u8]) -> MalformedReason {
    Record::parse(bytes).unwrap_err().reason()
}

#[test]
fn malformed_fewer_than_64_bytes() {
    let v = encode(&spec(b"", b""));
    assert_eq!(
        Record::parse(&v[..63]).unwrap_err(),
        ParseError::Short { got: 63 }
    );
    assert_eq!(reason(&[]), MalformedReason::Short);
}

#[test]
fn malformed_wrong_or_byte_swapped_magic() {
    let mut v = encode(&spec(b"", b""));
    set_u32(&mut v, 0, RECORD_MAGIC.swap_bytes());
    assert_eq!(reason(&v), MalformedReason::BadMagic);
    let msg = Record::parse(&v).unwrap_err().to_string();
    assert!(msg.contains("magic") && msg.contains("0x4d465845"), "{msg}");
}

#[test]
fn malformed_other_major_version() {
    let mut v = encode(&spec(b"", b""));
    set_u16(&mut v, 4, 2);
    assert_eq!(
        Record::parse(&v).unwrap_err(),
        ParseError::BadVersion { got: 2 }
    );
}

#[test]
fn malformed_header_len_below_64_or_above_total_len() {
    let mut v = encode(&spec(b"", b""));
    set_u16(&mut v, 6, 60);
    assert_eq!(reason(&v), MalformedReason::BadHeaderLen);
    let mut v = encode(&spec(b"", b""));
    set_u16(&mut v, 6, 65);
    assert_eq!(
        Record::parse(&v).unwrap_err(),
        ParseError::BadHeaderLen {
            header_len: 65,
            total_len: 64
        }
    );
}

#[test]
fn malformed_total_len_larger_than_what_arrived() {
    let v = encode(&spec(b"eth0", b""));
    assert_eq!(
        Record::parse(&v[..66]).unwrap_err(),
        ParseError::BadTotalLen {
            total_len: 68,
            available: 66
        }
    );
    let mut big = vec![0u8; 70_000];
    big[..68].copy_from_slice(&v);
    set_u32(&mut big, 8, 65_536);
    assert_eq!(reason(&big), MalformedReason::BadTotalLen);
}

#[test]
fn malformed_offset_outside_header_len_total_len() {
    // keyword pointing into the header
    let mut v = encode(&spec(b"eth0", b""));
    set_u16(&mut v, 44, 60);
    assert_eq!(reason(&v), MalformedReason::KeywordOutOfBounds);
    // keyword running past total_len
    let mut v = encode(&spec(b"eth0", b""));
    set_u16(&mut v, 46, 5);
    assert_eq!(reason(&v), MalformedReason::KeywordOutOfBounds);
    // detail past total_len
    let mut v = encode(&spec(b"", b"xy"));
    set_u16(&mut v, 50, 3);
    assert_eq!(reason(&v), MalformedReason::DetailOutOfBounds);
    // detail inside header_len > 64
    let mut v = encode(&spec(b"", b"xyzw"));
    set_u16(&mut v, 6, 66);
    assert_eq!(reason(&v), MalformedReason::DetailOutOfBounds);
}

#[test]
fn malformed_keyword_longer_than_1023() {
    let kw = vec![b'a'; 1024];
    let v = encode(&spec(&kw, b""));
    assert_eq!(
        Record::parse(&v).unwrap_err(),
        ParseError::KeywordTooLong { len: 1024 }
    );
    let kw = vec![b'a'; 1023];
    assert!(Record::parse(&encode(&spec(&kw, b""))).is_ok());
}

#[test]
fn malformed_keyword_not_utf8_or_holding_nul() {
    let v = encode(&spec(b"et\xffh0", b""));
    assert_eq!(reason(&v), MalformedReason::KeywordNotUtf8);
    let v = encode(&spec(b"eth\x000", b""));
    assert_eq!(
        Record::parse(&v).unwrap_err(),
        ParseError::KeywordNul { at: 3 }
    );
}

#[test]
fn malformed_unknown_category_or_severity() {
    let mut s = spec(b"", b"");
    s.category = 7;
    assert_eq!(reason(&encode(&s)), MalformedReason::UnknownCategory);
    s.category = 0;
    assert_eq!(reason(&encode(&s)), MalformedReason::UnknownCategory);
    let mut s = spec(b"", b"");
    s.severity = 4;
    assert_eq!(reason(&encode(&s)), MalformedReason::UnknownSeverity);
}

#[test]
fn malformed_offset_zero_with_a_length() {
    let mut v = encode(&spec(b"", b"ab"));
    set_u16(&mut v, 48, 0);
    assert_eq!(
        Record::parse(&v).unwrap_err(),
        ParseError::LengthWithoutOffset {
            field: "detail",
            len: 2
        }
    );
    let mut v = encode(&spec(b"", b""));
    set_u16(&mut v, 46, 1);
    assert_eq!(reason(&v), MalformedReason::LengthWithoutOffset);
}

#[test]
fn malformed_keyword_and_detail_overlap() {
    let mut v = encode(&spec(b"eth0", b"zz"));
    set_u16(&mut v, 48, 66); // detail starts inside the keyword
    assert_eq!(reason(&v), MalformedReason::Overlap);
}

#[test]
fn every_reason_has_a_distinct_index_and_name() {
    let mut names: Vec<_> = MalformedReason::ALL.iter().map(|r| r.name()).collect();
    for (i, r) in MalformedReason::ALL.iter().enumerate() {
        assert_eq!(r.index(), i);
    }
    names.sort();
    names.dedup();
    assert_eq!(names.len(), MalformedReason::COUNT);
}

#[test]
fn category_names_round_trip() {
    for c in Category::ALL {
        assert_eq!(Category::from_name(c.name()), Some(c));
        assert_eq!(Category::from_code(c.code()), Some(c));
        assert!(c.name().len() <= CATEGORY_NAME_MAX);
    }
    assert_eq!(Category::from_name("nic"), None);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = Record::parse(&bytes);
    }

    #[test]
    fn mutated_valid_records_never_panic_and_stay_in_bounds(
        kw in "[a-z0-9/]{0,40}",
        detail in proptest::collection::vec(any::<u8>(), 0..40),
        flips in proptest::collection::vec((0usize..200, any::<u8>()), 0..6),
        cut in 0usize..200,
    ) {
        let mut v = encode(&spec(kw.as_bytes(), &detail));
        for (at, b) in flips {
            if let Some(x) = v.get_mut(at) { *x = b; }
        }
        let cut = cut.min(v.len());
        if let Ok(r) = Record::parse(&v[..v.len() - cut]) {
            prop_assert!(r.as_bytes().len() <= v.len());
            prop_assert!(r.keyword().len() <= KEYWORD_MAX);
            prop_assert!(!r.keyword().contains('\0'));
        }
    }

    #[test]
    fn encode_then_parse_round_trips(
        kw in "[a-zA-Z0-9/._-]{0,64}",
        detail in proptest::collection::vec(any::<u8>(), 0..64),
        seq in any::<u64>(), ts in any::<u64>(), cat in 1u16..=6, sev in 0u16..=3,
        code in any::<u32>(), dev in any::<u32>(),
    ) {
        let s = RecordSpec { flags: 0, sequence: seq, timestamp_ns: ts, category: cat, severity: sev,
            event_code: code, device_index: dev, keyword: kw.as_bytes(), detail: &detail, driver_id: 1 };
        let v = encode(&s);
        let r = Record::parse(&v).unwrap();
        prop_assert_eq!(r.sequence(), seq);
        prop_assert_eq!(r.timestamp_ns(), ts);
        prop_assert_eq!(r.category().code(), cat);
        prop_assert_eq!(r.severity().code(), sev);
        prop_assert_eq!(r.event_code(), code);
        prop_assert_eq!(r.device_index(), dev);
        prop_assert_eq!(r.keyword(), kw.as_str());
        prop_assert_eq!(r.detail(), &detail[..]);
    }
}
