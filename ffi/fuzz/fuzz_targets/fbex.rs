//! The FBEX0100 exit-program block, both ways.
//!
//! Decoder: `ExitBlock::parse` on arbitrary bytes. Nothing may panic; an
//! accepted block is the first `length` bytes of the input, its strings lie
//! inside it, and encoding what was read gives back exactly those bytes (the
//! format leaves no freedom: fixed offsets, NUL padding, zero reserved
//! fields).
//!
//! Encoder: an `ExitBlock` built from the same bytes (any numbers, any
//! strings, of any length) is encoded and must parse back: every number as
//! given, each name cut to what its NUL-padded field holds (before any NUL,
//! at most 63/63/31 bytes, whole characters), the keyword to at most 1023
//! bytes of whole characters.
#![no_main]

use faultbridge_ffi::wire::fbex::{ExitBlock, FBEX_FIXED_LEN, FBEX_KEYWORD_MAX};
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;

/// `part`'s offset inside `whole`, asserting that it lies within it.
fn offset_within(whole: &[u8], part: &str) -> usize {
    let start = (part.as_ptr() as usize).wrapping_sub(whole.as_ptr() as usize);
    assert!(start <= whole.len() && part.len() <= whole.len() - start);
    start
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character
/// boundary.
fn cut(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// What a NUL-padded field of `n` bytes holds of `s`.
fn in_field(s: &str, n: usize) -> &str {
    cut(s.split('\0').next().unwrap_or_default(), n - 1)
}

fn arbitrary_block<'a>(u: &mut Unstructured<'a>) -> Result<ExitBlock<'a>> {
    Ok(ExitBlock {
        action_code: u.arbitrary()?,
        prior_action_code: u.arbitrary()?,
        restarts_done: u.arbitrary()?,
        restart_limit: u.arbitrary()?,
        flags: u.arbitrary()?,
        sequence: u.arbitrary()?,
        timestamp_ns: u.arbitrary()?,
        category: u.arbitrary()?,
        severity: u.arbitrary()?,
        event_code: u.arbitrary()?,
        device_index: u.arbitrary()?,
        monitor_name: u.arbitrary()?,
        recovery_target: u.arbitrary()?,
        category_name: u.arbitrary()?,
        keyword: u.arbitrary()?,
    })
}

fuzz_target!(|data: &[u8]| {
    // Decoder.
    if let Ok(b) = ExitBlock::parse(data) {
        let length = FBEX_FIXED_LEN + b.keyword.len();
        assert!(length <= data.len());
        assert!(b.keyword.len() <= FBEX_KEYWORD_MAX);
        if !b.keyword.is_empty() {
            assert_eq!(offset_within(data, b.keyword), FBEX_FIXED_LEN);
        }
        for (s, at, n) in [
            (b.monitor_name, 0x38, 64),
            (b.recovery_target, 0x78, 64),
            (b.category_name, 0xB8, 32),
        ] {
            if !s.is_empty() {
                assert_eq!(offset_within(data, s), at);
            }
            assert!(s.len() < n && !s.contains('\0'));
        }
        assert_eq!(
            b.encode(),
            &data[..length],
            "decode then encode changed the bytes"
        );
    }

    // Encoder.
    let mut u = Unstructured::new(data);
    let Ok(b) = arbitrary_block(&mut u) else {
        return;
    };
    let bytes = b.encode();
    let back = match ExitBlock::parse(&bytes) {
        Ok(back) => back,
        Err(e) => panic!("{b:?} encoded to a block that does not parse: {e}"),
    };
    let expected = ExitBlock {
        monitor_name: in_field(b.monitor_name, 64),
        recovery_target: in_field(b.recovery_target, 64),
        category_name: in_field(b.category_name, 32),
        keyword: cut(b.keyword, FBEX_KEYWORD_MAX),
        ..b.clone()
    };
    assert_eq!(back, expected);
    assert_eq!(bytes.len(), FBEX_FIXED_LEN + expected.keyword.len());
});
