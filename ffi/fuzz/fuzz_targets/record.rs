//! `Record::parse` on arbitrary bytes. When it accepts them, the view must
//! keep every promise of spec section 2: the record is the first `total_len`
//! bytes of the input, and the keyword and detail lie inside
//! `[header_len, total_len)`, at their header offsets, without overlapping.
#![no_main]

use faultbridge_ffi::wire::record::{KEYWORD_MAX, RECORD_HDR_LEN, RECORD_MAX, Record};
use libfuzzer_sys::fuzz_target;

/// `part`'s offset inside `whole`, asserting that it lies within it.
fn offset_within(whole: &[u8], part: &[u8]) -> usize {
    let start = (part.as_ptr() as usize).wrapping_sub(whole.as_ptr() as usize);
    assert!(
        start <= whole.len() && part.len() <= whole.len() - start,
        "slice [{start}, +{}) outside the {}-byte record",
        part.len(),
        whole.len()
    );
    start
}

fuzz_target!(|data: &[u8]| {
    let Ok(r) = Record::parse(data) else {
        return;
    };
    let hdr = r.header();
    let rec = r.as_bytes();

    // The record is a prefix of the input, `total_len` long.
    assert_eq!(rec.as_ptr(), data.as_ptr());
    assert_eq!(rec.len(), hdr.total_len as usize);
    assert!(rec.len() <= data.len() && rec.len() <= RECORD_MAX);
    let header_len = hdr.header_len as usize;
    assert!(RECORD_HDR_LEN <= header_len && header_len <= rec.len());

    // Keyword and detail: inside [header_len, total_len), where the header says.
    let keyword = r.keyword().as_bytes();
    let detail = r.detail();
    assert_eq!(keyword.len(), hdr.keyword_len as usize);
    assert_eq!(detail.len(), hdr.detail_len as usize);
    assert!(keyword.len() <= KEYWORD_MAX);
    assert!(!keyword.contains(&0));
    let mut spans = Vec::new();
    for (part, offset) in [(keyword, hdr.keyword_offset), (detail, hdr.detail_offset)] {
        if part.is_empty() {
            continue;
        }
        let start = offset_within(rec, part);
        assert_eq!(start, offset as usize);
        assert!(start >= header_len, "variable data inside the header");
        spans.push(start..start + part.len());
    }
    if let [a, b] = &spans[..] {
        assert!(
            a.end <= b.start || b.end <= a.start,
            "keyword and detail overlap"
        );
    }

    // The typed fields agree with the raw header.
    assert_eq!(r.category().code(), hdr.category);
    assert_eq!(r.severity().code(), hdr.severity);
    assert_eq!(r.sequence(), hdr.sequence);
    assert_eq!(r.event_code(), hdr.event_code);
    assert_eq!(r.flags(), hdr.flags);

    // A record is self-delimiting: parsing exactly its bytes gives the same view.
    assert_eq!(Record::parse(rec), Ok(r));
});
