//! The ABI v1 fault record (spec section 2): the raw 64-byte header and the
//! checked, borrowing [`Record`] view.
//!
//! Inside a netlink datagram a record is only 4-byte aligned while the header
//! holds `u64` fields, so the header is read with an unaligned load of its 64
//! bytes; the keyword and detail are borrowed from the input, never copied.

use bytemuck::{Pod, Zeroable};
use std::mem::{offset_of, size_of};
use thiserror::Error;

/// `EXPDRV_RECORD_MAGIC`: the bytes `E X F M` in memory order.
pub const RECORD_MAGIC: u32 = 0x4D46_5845;
/// `EXPDRV_ABI_VERSION`.
pub const ABI_VERSION: u16 = 1;
/// `EXPDRV_RECORD_HDR_LEN`: the fixed header of v1.
pub const RECORD_HDR_LEN: usize = 64;
/// `EXPDRV_RECORD_MAX`: the largest `total_len`.
pub const RECORD_MAX: usize = 65535;
/// `EXPDRV_KEYWORD_MAX`.
pub const KEYWORD_MAX: usize = 1023;
/// `EXPDRV_CATEGORY_NAME_MAX`: a category name as a monitor names it.
pub const CATEGORY_NAME_MAX: usize = 32;
/// `EXPDRV_F_SNAPSHOT`: replayed by `EXPDRV_IOC_SNAPSHOT`, not a new detection.
pub const F_SNAPSHOT: u32 = 1 << 0;
/// `EXPDRV_F_TEST`: injected by an administrator test.
pub const F_TEST: u32 = 1 << 1;

/// `EXPDRV_MSG_FAULT`: a fault condition was detected.
pub const EXPDRV_MSG_FAULT: u16 = 0x0010;
/// `EXPDRV_MSG_CLEAR`: a fault condition ended (same record layout).
pub const EXPDRV_MSG_CLEAR: u16 = 0x0011;

/// Event codes of spec section 3 (high 16 bits = category code).
pub mod event {
    /// NIC link down.
    pub const NIC_LINK_DOWN: u32 = 0x0001_0001;
    /// NIC link up (sent as `EXPDRV_MSG_CLEAR`).
    pub const NIC_LINK_UP: u32 = 0x0001_0002;
    /// NIC hardware error (TX timeout, reset failure).
    pub const NIC_HW_ERROR: u32 = 0x0001_0003;
    /// FC port offline / link down.
    pub const FC_PORT_OFFLINE: u32 = 0x0002_0001;
    /// FC port online (clear).
    pub const FC_PORT_ONLINE: u32 = 0x0002_0002;
    /// FC path lost to target.
    pub const FC_PATH_LOST: u32 = 0x0002_0003;
    /// Generic fatal error for category `cat`.
    pub const fn generic_fatal(cat: u16) -> u32 {
        ((cat as u32) << 16) | 0x00FF
    }
}

/// `struct expdrv_record`, byte for byte (host byte order).
///
/// | Dec | Hex | Type | Field |
/// |---|---|---|---|
/// | 0 | 0x00 | u32 | `magic` |
/// | 4 | 0x04 | u16 | `version` |
/// | 6 | 0x06 | u16 | `header_len` |
/// | 8 | 0x08 | u32 | `total_len` |
/// | 12 | 0x0C | u32 | `flags` |
/// | 16 | 0x10 | u64 | `sequence` |
/// | 24 | 0x18 | u64 | `timestamp_ns` |
/// | 32 | 0x20 | u16 | `category` |
/// | 34 | 0x22 | u16 | `severity` |
/// | 36 | 0x24 | u32 | `event_code` |
/// | 40 | 0x28 | u32 | `device_index` |
/// | 44 | 0x2C | u16 | `keyword_offset` |
/// | 46 | 0x2E | u16 | `keyword_len` |
/// | 48 | 0x30 | u16 | `detail_offset` |
/// | 50 | 0x32 | u16 | `detail_len` |
/// | 52 | 0x34 | u32 | `driver_id` |
/// | 56 | 0x38 | u64 | `reserved` |
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct RecordHeaderRaw {
    pub magic: u32,
    pub version: u16,
    pub header_len: u16,
    pub total_len: u32,
    pub flags: u32,
    pub sequence: u64,
    pub timestamp_ns: u64,
    pub category: u16,
    pub severity: u16,
    pub event_code: u32,
    pub device_index: u32,
    pub keyword_offset: u16,
    pub keyword_len: u16,
    pub detail_offset: u16,
    pub detail_len: u16,
    pub driver_id: u32,
    pub reserved: u64,
}

const _: () = assert!(size_of::<RecordHeaderRaw>() == RECORD_HDR_LEN);
const _: () = assert!(offset_of!(RecordHeaderRaw, magic) == 0x00);
const _: () = assert!(offset_of!(RecordHeaderRaw, version) == 0x04);
const _: () = assert!(offset_of!(RecordHeaderRaw, header_len) == 0x06);
const _: () = assert!(offset_of!(RecordHeaderRaw, total_len) == 0x08);
const _: () = assert!(offset_of!(RecordHeaderRaw, flags) == 0x0C);
const _: () = assert!(offset_of!(RecordHeaderRaw, sequence) == 0x10);
const _: () = assert!(offset_of!(RecordHeaderRaw, timestamp_ns) == 0x18);
const _: () = assert!(offset_of!(RecordHeaderRaw, category) == 0x20);
const _: () = assert!(offset_of!(RecordHeaderRaw, severity) == 0x22);
const _: () = assert!(offset_of!(RecordHeaderRaw, event_code) == 0x24);
const _: () = assert!(offset_of!(RecordHeaderRaw, device_index) == 0x28);
const _: () = assert!(offset_of!(RecordHeaderRaw, keyword_offset) == 0x2C);
const _: () = assert!(offset_of!(RecordHeaderRaw, keyword_len) == 0x2E);
const _: () = assert!(offset_of!(RecordHeaderRaw, detail_offset) == 0x30);
const _: () = assert!(offset_of!(RecordHeaderRaw, detail_len) == 0x32);
const _: () = assert!(offset_of!(RecordHeaderRaw, driver_id) == 0x34);
const _: () = assert!(offset_of!(RecordHeaderRaw, reserved) == 0x38);

/// Fault categories of spec section 3.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u16)]
pub enum Category {
    Nic = 1,
    Fc = 2,
    HaSs = 3,
    HaAm = 4,
    HaRs = 5,
    Sps = 6,
}

impl Category {
    /// Every category, in code order.
    pub const ALL: [Category; 6] = [
        Category::Nic,
        Category::Fc,
        Category::HaSs,
        Category::HaAm,
        Category::HaRs,
        Category::Sps,
    ];

    /// The category of an ABI code, if known.
    pub const fn from_code(code: u16) -> Option<Category> {
        match code {
            1 => Some(Category::Nic),
            2 => Some(Category::Fc),
            3 => Some(Category::HaSs),
            4 => Some(Category::HaAm),
            5 => Some(Category::HaRs),
            6 => Some(Category::Sps),
            _ => None,
        }
    }

    /// The category of a configuration name (matched exactly, case-sensitive).
    pub fn from_name(name: &str) -> Option<Category> {
        Category::ALL.into_iter().find(|c| c.name() == name)
    }

    /// The ABI code.
    pub const fn code(self) -> u16 {
        self as u16
    }

    /// The name a monitor's configuration uses (`NIC`, `FC`, `HA/SS`, …).
    pub const fn name(self) -> &'static str {
        match self {
            Category::Nic => "NIC",
            Category::Fc => "FC",
            Category::HaSs => "HA/SS",
            Category::HaAm => "HA/AM",
            Category::HaRs => "HA/RS",
            Category::Sps => "SPS",
        }
    }
}

impl std::fmt::Display for Category {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Severity of a record (0 info, 1 warning, 2 error, 3 fatal).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u16)]
pub enum Severity {
    Info = 0,
    Warning = 1,
    Error = 2,
    Fatal = 3,
}

impl Severity {
    /// Every severity, lowest first.
    pub const ALL: [Severity; 4] = [
        Severity::Info,
        Severity::Warning,
        Severity::Error,
        Severity::Fatal,
    ];

    /// The severity of an ABI code, if valid.
    pub const fn from_code(code: u16) -> Option<Severity> {
        match code {
            0 => Some(Severity::Info),
            1 => Some(Severity::Warning),
            2 => Some(Severity::Error),
            3 => Some(Severity::Fatal),
            _ => None,
        }
    }

    /// The severity of its name (`info`, `warning`, `error`, `fatal`).
    pub fn from_name(name: &str) -> Option<Severity> {
        Severity::ALL.into_iter().find(|s| s.name() == name)
    }

    /// The ABI code.
    pub const fn code(self) -> u16 {
        self as u16
    }

    /// The lowercase name used on D-Bus and in configuration.
    pub const fn name(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
            Severity::Fatal => "fatal",
        }
    }
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a record was rejected: one reason per malformed rule of spec section 2.
/// The daemon counts malformed records by this reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
#[non_exhaustive]
pub enum MalformedReason {
    /// Fewer than 64 bytes.
    Short = 0,
    /// Wrong magic (including a byte-swapped one).
    BadMagic,
    /// A major version other than 1.
    BadVersion,
    /// `header_len < 64` or `header_len > total_len`.
    BadHeaderLen,
    /// `total_len` larger than the bytes that arrived (or than 65535).
    BadTotalLen,
    /// A keyword offset/length outside `[header_len, total_len)`, or a length with offset 0.
    KeywordOutOfBounds,
    /// A detail offset/length outside `[header_len, total_len)`, or a length with offset 0.
    DetailOutOfBounds,
    /// Keyword and detail overlap.
    Overlap,
    /// `keyword_len > 1023`.
    KeywordTooLong,
    /// Keyword not valid UTF-8.
    KeywordNotUtf8,
    /// Keyword holds a NUL.
    KeywordNul,
    /// Unknown category.
    UnknownCategory,
    /// Unknown severity.
    UnknownSeverity,
    /// An offset of 0 (absent) with a non-zero length.
    LengthWithoutOffset,
}

impl MalformedReason {
    /// Number of reasons (for counter arrays).
    pub const COUNT: usize = 14;
    /// Every reason, in counter-index order.
    pub const ALL: [MalformedReason; Self::COUNT] = [
        MalformedReason::Short,
        MalformedReason::BadMagic,
        MalformedReason::BadVersion,
        MalformedReason::BadHeaderLen,
        MalformedReason::BadTotalLen,
        MalformedReason::KeywordOutOfBounds,
        MalformedReason::DetailOutOfBounds,
        MalformedReason::Overlap,
        MalformedReason::KeywordTooLong,
        MalformedReason::KeywordNotUtf8,
        MalformedReason::KeywordNul,
        MalformedReason::UnknownCategory,
        MalformedReason::UnknownSeverity,
        MalformedReason::LengthWithoutOffset,
    ];

    /// Index into a counter array.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// A stable snake_case name, used in counters and status output.
    pub const fn name(self) -> &'static str {
        match self {
            MalformedReason::Short => "short",
            MalformedReason::BadMagic => "bad_magic",
            MalformedReason::BadVersion => "bad_version",
            MalformedReason::BadHeaderLen => "bad_header_len",
            MalformedReason::BadTotalLen => "bad_total_len",
            MalformedReason::KeywordOutOfBounds => "keyword_out_of_bounds",
            MalformedReason::DetailOutOfBounds => "detail_out_of_bounds",
            MalformedReason::Overlap => "overlap",
            MalformedReason::KeywordTooLong => "keyword_too_long",
            MalformedReason::KeywordNotUtf8 => "keyword_not_utf8",
            MalformedReason::KeywordNul => "keyword_nul",
            MalformedReason::UnknownCategory => "unknown_category",
            MalformedReason::UnknownSeverity => "unknown_severity",
            MalformedReason::LengthWithoutOffset => "length_without_offset",
        }
    }
}

/// A malformed record: which rule, which field, and the bound it broke.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ParseError {
    #[error("record is {got} bytes, fewer than the {RECORD_HDR_LEN}-byte header")]
    Short { got: usize },
    #[error("magic is {got:#010x}, expected {RECORD_MAGIC:#010x}")]
    BadMagic { got: u32 },
    #[error("version is {got}, expected {ABI_VERSION}")]
    BadVersion { got: u16 },
    #[error("header_len is {header_len}, must be >= {RECORD_HDR_LEN} and <= total_len {total_len}")]
    BadHeaderLen { header_len: u16, total_len: u32 },
    #[error("total_len is {total_len}, but only {available} bytes arrived (maximum {RECORD_MAX})")]
    BadTotalLen { total_len: u32, available: usize },
    #[error(
        "keyword [{offset}, {offset}+{len}) is not inside [header_len {header_len}, total_len {total_len})"
    )]
    KeywordOutOfBounds {
        offset: u16,
        len: u16,
        header_len: u16,
        total_len: u32,
    },
    #[error(
        "detail [{offset}, {offset}+{len}) is not inside [header_len {header_len}, total_len {total_len})"
    )]
    DetailOutOfBounds {
        offset: u16,
        len: u16,
        header_len: u16,
        total_len: u32,
    },
    #[error(
        "keyword [{keyword_offset}, +{keyword_len}) overlaps detail [{detail_offset}, +{detail_len})"
    )]
    Overlap {
        keyword_offset: u16,
        keyword_len: u16,
        detail_offset: u16,
        detail_len: u16,
    },
    #[error("keyword_len is {len}, more than {KEYWORD_MAX}")]
    KeywordTooLong { len: u16 },
    #[error("keyword is not valid UTF-8 (error at byte {valid_up_to})")]
    KeywordNotUtf8 { valid_up_to: usize },
    #[error("keyword holds a NUL at byte {at}")]
    KeywordNul { at: usize },
    #[error("category {got} is not one of 1..=6")]
    UnknownCategory { got: u16 },
    #[error("severity {got} is not one of 0..=3")]
    UnknownSeverity { got: u16 },
    #[error("{field}_offset is 0 (absent) but {field}_len is {len}")]
    LengthWithoutOffset { field: &'static str, len: u16 },
}

impl ParseError {
    /// The counter this error is counted under.
    pub const fn reason(&self) -> MalformedReason {
        match self {
            ParseError::Short { .. } => MalformedReason::Short,
            ParseError::BadMagic { .. } => MalformedReason::BadMagic,
            ParseError::BadVersion { .. } => MalformedReason::BadVersion,
            ParseError::BadHeaderLen { .. } => MalformedReason::BadHeaderLen,
            ParseError::BadTotalLen { .. } => MalformedReason::BadTotalLen,
            ParseError::KeywordOutOfBounds { .. } => MalformedReason::KeywordOutOfBounds,
            ParseError::DetailOutOfBounds { .. } => MalformedReason::DetailOutOfBounds,
            ParseError::Overlap { .. } => MalformedReason::Overlap,
            ParseError::KeywordTooLong { .. } => MalformedReason::KeywordTooLong,
            ParseError::KeywordNotUtf8 { .. } => MalformedReason::KeywordNotUtf8,
            ParseError::KeywordNul { .. } => MalformedReason::KeywordNul,
            ParseError::UnknownCategory { .. } => MalformedReason::UnknownCategory,
            ParseError::UnknownSeverity { .. } => MalformedReason::UnknownSeverity,
            ParseError::LengthWithoutOffset { .. } => MalformedReason::LengthWithoutOffset,
        }
    }
}

/// A validated record borrowing its variable data from the input buffer.
///
/// Made only by [`Record::parse`], which checks every rule of spec section 2
/// before anything reads through an offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    hdr: RecordHeaderRaw,
    category: Category,
    severity: Severity,
    keyword: &'a str,
    detail: &'a [u8],
    bytes: &'a [u8],
}

/// The first length or offset rule of spec section 2 that `hdr` breaks, in
/// the order [`Record::parse`] documents; `None` when it breaks none.
/// `available` is the number of bytes that arrived. The slow path of
/// `parse`, taken only by malformed records.
#[cold]
#[inline(never)]
fn header_error(hdr: &RecordHeaderRaw, available: usize) -> Option<ParseError> {
    if hdr.magic != RECORD_MAGIC {
        return Some(ParseError::BadMagic { got: hdr.magic });
    }
    if hdr.version != ABI_VERSION {
        return Some(ParseError::BadVersion { got: hdr.version });
    }
    if (hdr.header_len as usize) < RECORD_HDR_LEN || hdr.header_len as u32 > hdr.total_len {
        return Some(ParseError::BadHeaderLen {
            header_len: hdr.header_len,
            total_len: hdr.total_len,
        });
    }
    let total = hdr.total_len as usize;
    if total > available || total > RECORD_MAX {
        return Some(ParseError::BadTotalLen {
            total_len: hdr.total_len,
            available,
        });
    }
    if hdr.keyword_len as usize > KEYWORD_MAX {
        return Some(ParseError::KeywordTooLong {
            len: hdr.keyword_len,
        });
    }
    if hdr.keyword_offset == 0 && hdr.keyword_len != 0 {
        return Some(ParseError::LengthWithoutOffset {
            field: "keyword",
            len: hdr.keyword_len,
        });
    }
    if hdr.detail_offset == 0 && hdr.detail_len != 0 {
        return Some(ParseError::LengthWithoutOffset {
            field: "detail",
            len: hdr.detail_len,
        });
    }
    let Some(kw) = field_range(
        hdr.keyword_offset,
        hdr.keyword_len,
        hdr.header_len,
        hdr.total_len,
    ) else {
        return Some(ParseError::KeywordOutOfBounds {
            offset: hdr.keyword_offset,
            len: hdr.keyword_len,
            header_len: hdr.header_len,
            total_len: hdr.total_len,
        });
    };
    let Some(dt) = field_range(
        hdr.detail_offset,
        hdr.detail_len,
        hdr.header_len,
        hdr.total_len,
    ) else {
        return Some(ParseError::DetailOutOfBounds {
            offset: hdr.detail_offset,
            len: hdr.detail_len,
            header_len: hdr.header_len,
            total_len: hdr.total_len,
        });
    };
    if !kw.is_empty() && !dt.is_empty() && kw.start < dt.end && dt.start < kw.end {
        return Some(ParseError::Overlap {
            keyword_offset: hdr.keyword_offset,
            keyword_len: hdr.keyword_len,
            detail_offset: hdr.detail_offset,
            detail_len: hdr.detail_len,
        });
    }
    None
}

/// Whether `bytes` holds a NUL, a word at a time: keywords are short, and a
/// byte loop whose exit depends on each keyword's length costs more here than
/// the UTF-8 check.
#[inline(always)]
fn has_nul(bytes: &[u8]) -> bool {
    // True exactly when some byte of `w` is zero: the classic
    // `(w - 0x0101..) & !w & 0x8080..` test, exact for "any" because a borrow
    // only ever propagates upwards from a byte that is itself zero. The 4-byte
    // case fills the upper half with 0x01 so it holds no zero byte.
    const fn zero_byte_in(w: u64) -> bool {
        w.wrapping_sub(0x0101_0101_0101_0101) & !w & 0x8080_8080_8080_8080 != 0
    }
    let word = |b: [u8; 8]| zero_byte_in(u64::from_ne_bytes(b));
    let half = |b: [u8; 4]| zero_byte_in(u64::from(u32::from_ne_bytes(b)) | 0x0101_0101_0000_0000);
    match (bytes.first_chunk::<8>(), bytes.last_chunk::<8>()) {
        // 8 bytes or more: whole words, the last one overlapping the one before.
        (Some(_), Some(last)) => {
            bytes
                .chunks_exact(8)
                .any(|w| w.first_chunk::<8>().is_some_and(|w| word(*w)))
                || word(*last)
        }
        _ => match (bytes.first_chunk::<4>(), bytes.last_chunk::<4>()) {
            // 4 to 7 bytes: two overlapping halves.
            (Some(first), Some(last)) => half(*first) | half(*last),
            // 0 to 3 bytes.
            _ => bytes.contains(&0),
        },
    }
}

/// Checks that `[off, off+len)` lies inside `[lo, hi)` (an offset of 0,
/// "absent", is checked by the caller). Returns the byte range.
fn field_range(off: u16, len: u16, lo: u16, hi: u32) -> Option<std::ops::Range<usize>> {
    if off == 0 {
        return Some(0..0);
    }
    let start = off as u32;
    let end = start + len as u32;
    (start >= lo as u32 && end <= hi).then_some(start as usize..end as usize)
}

impl<'a> Record<'a> {
    /// Validates `buf` as one record. `buf` may be longer than the record
    /// (netlink padding, following data); the record ends at `total_len`.
    /// Works at any alignment: the 64-byte header is loaded unaligned, the
    /// keyword and detail are borrowed.
    ///
    /// Checks, in this order, each giving its own [`ParseError`]: length,
    /// magic, version, `header_len`, `total_len`, `keyword_len`, an offset of
    /// 0 with a length (keyword, then detail), the keyword's and the detail's
    /// bounds, overlap, UTF-8, NUL, category, severity.
    // `inline(always)`: the view is ~120 bytes; inlined, it lives in registers
    // instead of being stored by the callee and reloaded by the caller, which
    // is about a quarter of the cost of a parse (`benches/parse.rs`).
    #[inline(always)]
    pub fn parse(buf: &'a [u8]) -> Result<Record<'a>, ParseError> {
        let Some(head) = buf.first_chunk::<RECORD_HDR_LEN>() else {
            return Err(ParseError::Short { got: buf.len() });
        };
        // The fields the checks need are read straight from the input; the
        // copy of the whole header below is only stored into the view.
        let u16_at = |off: usize| u16::from_ne_bytes([head[off], head[off + 1]]);
        let u32_at = |off: usize| {
            u32::from_ne_bytes([head[off], head[off + 1], head[off + 2], head[off + 3]])
        };
        let magic = u32_at(offset_of!(RecordHeaderRaw, magic));
        let version = u16_at(offset_of!(RecordHeaderRaw, version));
        let total = u32_at(offset_of!(RecordHeaderRaw, total_len));
        let header_len = u32::from(u16_at(offset_of!(RecordHeaderRaw, header_len)));
        let kw_off = u32::from(u16_at(offset_of!(RecordHeaderRaw, keyword_offset)));
        let kw_len = u32::from(u16_at(offset_of!(RecordHeaderRaw, keyword_len)));
        let dt_off = u32::from(u16_at(offset_of!(RecordHeaderRaw, detail_offset)));
        let dt_len = u32::from(u16_at(offset_of!(RecordHeaderRaw, detail_len)));
        let category = u16_at(offset_of!(RecordHeaderRaw, category));
        let severity = u16_at(offset_of!(RecordHeaderRaw, severity));
        let (kw_end, dt_end) = (kw_off + kw_len, dt_off + dt_len);
        // Every length and offset rule of spec section 2, evaluated without
        // short-circuiting (`&`, not `&&`) so the valid case is a few
        // well-predicted branches. Only when one fails does `header_error`
        // go through them one by one to name the first broken, in order.
        let header_ok = (magic == RECORD_MAGIC)
            & (version == ABI_VERSION)
            & (header_len >= RECORD_HDR_LEN as u32)
            & (header_len <= total)
            & (total as usize <= buf.len())
            & (total as usize <= RECORD_MAX)
            & (kw_len as usize <= KEYWORD_MAX)
            // Present: inside [header_len, total_len). Absent: offset and length 0.
            & (kw_end <= total)
            & ((kw_off >= header_len) | (kw_end == 0))
            & (dt_end <= total)
            & ((dt_off >= header_len) | (dt_end == 0))
            & !((kw_len != 0) & (dt_len != 0) & (kw_off < dt_end) & (dt_off < kw_end));
        if !header_ok && let Some(e) = header_error(&bytemuck::pod_read_unaligned(head), buf.len())
        {
            return Err(e);
        }
        // `None` cannot happen (the two checks are the same rules); had it
        // happened, every rule holds, so the slicing below is in bounds.
        let bytes = &buf[..total as usize];
        let kw_bytes = &bytes[kw_off as usize..kw_end as usize];
        let keyword = match std::str::from_utf8(kw_bytes) {
            Ok(s) => s,
            Err(e) => {
                return Err(ParseError::KeywordNotUtf8 {
                    valid_up_to: e.valid_up_to(),
                });
            }
        };
        if has_nul(kw_bytes) {
            let at = kw_bytes.iter().position(|&b| b == 0).unwrap_or_default();
            return Err(ParseError::KeywordNul { at });
        }
        let Some(category) = Category::from_code(category) else {
            return Err(ParseError::UnknownCategory { got: category });
        };
        let Some(severity) = Severity::from_code(severity) else {
            return Err(ParseError::UnknownSeverity { got: severity });
        };
        Ok(Record {
            hdr: bytemuck::pod_read_unaligned(head),
            category,
            severity,
            keyword,
            detail: &bytes[dt_off as usize..dt_end as usize],
            bytes,
        })
    }

    /// The raw header (a copy of the 64 bytes; fields beyond 64 are ignored).
    pub fn header(&self) -> &RecordHeaderRaw {
        &self.hdr
    }
    /// The record's bytes, `[0, total_len)`.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }
    pub fn sequence(&self) -> u64 {
        self.hdr.sequence
    }
    pub fn timestamp_ns(&self) -> u64 {
        self.hdr.timestamp_ns
    }
    pub fn flags(&self) -> u32 {
        self.hdr.flags
    }
    pub fn is_snapshot(&self) -> bool {
        self.hdr.flags & F_SNAPSHOT != 0
    }
    pub fn is_test(&self) -> bool {
        self.hdr.flags & F_TEST != 0
    }
    pub fn category(&self) -> Category {
        self.category
    }
    pub fn severity(&self) -> Severity {
        self.severity
    }
    pub fn event_code(&self) -> u32 {
        self.hdr.event_code
    }
    pub fn device_index(&self) -> u32 {
        self.hdr.device_index
    }
    pub fn driver_id(&self) -> u32 {
        self.hdr.driver_id
    }
    /// The device the fault names (`eth0`, `host3`, `/dev/sdb`); empty when none.
    pub fn keyword(&self) -> &'a str {
        self.keyword
    }
    /// Opaque detail bytes; empty when none.
    pub fn detail(&self) -> &'a [u8] {
        self.detail
    }
}

/// The fields of a record to build, for the simulator and tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordSpec<'a> {
    pub flags: u32,
    pub sequence: u64,
    pub timestamp_ns: u64,
    pub category: u16,
    pub severity: u16,
    pub event_code: u32,
    pub device_index: u32,
    pub keyword: &'a [u8],
    pub detail: &'a [u8],
    pub driver_id: u32,
}

impl RecordSpec<'_> {
    /// Appends the record as a driver would lay it out (header, keyword,
    /// detail; no trailing padding) and returns its `total_len`.
    /// Lengths are truncated to the u16 fields; malformed specs are the
    /// caller's intent (the simulator emits them on purpose).
    pub fn encode_into(&self, out: &mut Vec<u8>) -> usize {
        let kw_off = if self.keyword.is_empty() {
            0
        } else {
            RECORD_HDR_LEN
        };
        let dt_off = if self.detail.is_empty() {
            0
        } else {
            RECORD_HDR_LEN + self.keyword.len()
        };
        let total = RECORD_HDR_LEN + self.keyword.len() + self.detail.len();
        let hdr = RecordHeaderRaw {
            magic: RECORD_MAGIC,
            version: ABI_VERSION,
            header_len: RECORD_HDR_LEN as u16,
            total_len: total as u32,
            flags: self.flags,
            sequence: self.sequence,
            timestamp_ns: self.timestamp_ns,
            category: self.category,
            severity: self.severity,
            event_code: self.event_code,
            device_index: self.device_index,
            keyword_offset: kw_off as u16,
            keyword_len: self.keyword.len() as u16,
            detail_offset: dt_off as u16,
            detail_len: self.detail.len() as u16,
            driver_id: self.driver_id,
            reserved: 0,
        };
        out.extend_from_slice(bytemuck::bytes_of(&hdr));
        out.extend_from_slice(self.keyword);
        out.extend_from_slice(self.detail);
        total
    }
}

#[cfg(test)]
mod tests;
