//! Pins the Rust side of the ABI to the C header `ffi/include/expdrv.h`.
//!
//! A small C program that includes the header is compiled with the system
//! `cc` and run; it prints `sizeof`/`offsetof` of every field of
//! `struct expdrv_record` and `struct expdrv_info` (and of the kernel's
//! `struct nlmsghdr`, which the netlink walker mirrors), the signedness of each
//! integer field, and the value of every `#define` of the header. Each line is
//! compared with `std::mem::offset_of!` on the Rust structs and with the Rust
//! constants. A `#define` of the header that the test does not know about fails
//! the test, so a constant added to the header cannot go unchecked.
//!
//! A second test compiles the header alone with
//! `-Wall -Wextra -Werror -std=c99 -pedantic`.
//!
//! `cc` is required: without it these tests fail (they are never skipped).
#![allow(clippy::unwrap_used)]

use faultbridge_ffi::sys::ioctl::{
    EXPDRV_IOC_ACK, EXPDRV_IOC_GET_INFO, EXPDRV_IOC_MAGIC, EXPDRV_IOC_SNAPSHOT,
};
use faultbridge_ffi::sys::netlink::NETLINK_USERSOCK;
use faultbridge_ffi::wire::info::ExpdrvInfoRaw;
use faultbridge_ffi::wire::nlmsg::{NLMSG_DONE, NLMSG_HDRLEN, NLMSG_NOOP, NlMsgHdrRaw};
use faultbridge_ffi::wire::record::{
    ABI_VERSION, CATEGORY_NAME_MAX, Category, EXPDRV_MSG_CLEAR, EXPDRV_MSG_FAULT, F_SNAPSHOT,
    F_TEST, KEYWORD_MAX, RECORD_HDR_LEN, RECORD_MAGIC, RECORD_MAX, RecordHeaderRaw, Severity,
    event,
};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::mem::{offset_of, size_of};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The header under test.
fn header_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("include/expdrv.h")
}

/// The multicast group the simulator sends on (spec section 1); the Rust side
/// has no named constant for it, so the spec's value is written here.
const SPEC_SIM_NETLINK_GROUP: u64 = 1;

/// One field of a C struct as the Rust mirror lays it out.
struct Field {
    c_struct: &'static str,
    name: &'static str,
    offset: usize,
    size: usize,
    /// An integer field (checked for unsignedness); `false` for byte arrays.
    integer: bool,
}

/// `field!(RustType, "c struct name", field, integer?)`.
macro_rules! field {
    ($ty:ty, $c:literal, $f:ident, $int:expr) => {
        Field {
            c_struct: $c,
            name: stringify!($f),
            offset: offset_of!($ty, $f),
            size: {
                fn size_of_field<T>(_: fn(&$ty) -> &T) -> usize {
                    size_of::<T>()
                }
                size_of_field(|s: &$ty| &s.$f)
            },
            integer: $int,
        }
    };
}

fn fields() -> Vec<Field> {
    vec![
        field!(RecordHeaderRaw, "expdrv_record", magic, true),
        field!(RecordHeaderRaw, "expdrv_record", version, true),
        field!(RecordHeaderRaw, "expdrv_record", header_len, true),
        field!(RecordHeaderRaw, "expdrv_record", total_len, true),
        field!(RecordHeaderRaw, "expdrv_record", flags, true),
        field!(RecordHeaderRaw, "expdrv_record", sequence, true),
        field!(RecordHeaderRaw, "expdrv_record", timestamp_ns, true),
        field!(RecordHeaderRaw, "expdrv_record", category, true),
        field!(RecordHeaderRaw, "expdrv_record", severity, true),
        field!(RecordHeaderRaw, "expdrv_record", event_code, true),
        field!(RecordHeaderRaw, "expdrv_record", device_index, true),
        field!(RecordHeaderRaw, "expdrv_record", keyword_offset, true),
        field!(RecordHeaderRaw, "expdrv_record", keyword_len, true),
        field!(RecordHeaderRaw, "expdrv_record", detail_offset, true),
        field!(RecordHeaderRaw, "expdrv_record", detail_len, true),
        field!(RecordHeaderRaw, "expdrv_record", driver_id, true),
        field!(RecordHeaderRaw, "expdrv_record", reserved, true),
        field!(ExpdrvInfoRaw, "expdrv_info", abi_version, true),
        field!(ExpdrvInfoRaw, "expdrv_info", record_max, true),
        field!(ExpdrvInfoRaw, "expdrv_info", last_sequence, true),
        field!(ExpdrvInfoRaw, "expdrv_info", netlink_protocol, true),
        field!(ExpdrvInfoRaw, "expdrv_info", netlink_group, true),
        field!(ExpdrvInfoRaw, "expdrv_info", driver_name, false),
        field!(NlMsgHdrRaw, "nlmsghdr", nlmsg_len, true),
        field!(NlMsgHdrRaw, "nlmsghdr", nlmsg_type, true),
        field!(NlMsgHdrRaw, "nlmsghdr", nlmsg_flags, true),
        field!(NlMsgHdrRaw, "nlmsghdr", nlmsg_seq, true),
        field!(NlMsgHdrRaw, "nlmsghdr", nlmsg_pid, true),
    ]
}

/// The C structs and their Rust sizes.
fn structs() -> Vec<(&'static str, usize)> {
    vec![
        ("expdrv_record", size_of::<RecordHeaderRaw>()),
        ("expdrv_info", size_of::<ExpdrvInfoRaw>()),
        ("nlmsghdr", size_of::<NlMsgHdrRaw>()),
    ]
}

/// Every constant: the C expression (a macro of `expdrv.h`, or a macro call)
/// and the Rust value it must equal.
fn constants() -> Vec<(&'static str, u64)> {
    let mut c: Vec<(&'static str, u64)> = vec![
        ("EXPDRV_ABI_VERSION", ABI_VERSION.into()),
        ("EXPDRV_MSG_FAULT", EXPDRV_MSG_FAULT.into()),
        ("EXPDRV_MSG_CLEAR", EXPDRV_MSG_CLEAR.into()),
        ("EXPDRV_SIM_NETLINK_PROTOCOL", NETLINK_USERSOCK as u64),
        ("EXPDRV_SIM_NETLINK_GROUP", SPEC_SIM_NETLINK_GROUP),
        ("EXPDRV_RECORD_MAGIC", RECORD_MAGIC.into()),
        ("EXPDRV_RECORD_HDR_LEN", RECORD_HDR_LEN as u64),
        ("EXPDRV_RECORD_MAX", RECORD_MAX as u64),
        ("EXPDRV_KEYWORD_MAX", KEYWORD_MAX as u64),
        ("EXPDRV_F_SNAPSHOT", F_SNAPSHOT.into()),
        ("EXPDRV_F_TEST", F_TEST.into()),
        ("EXPDRV_SEV_INFO", Severity::Info.code().into()),
        ("EXPDRV_SEV_WARNING", Severity::Warning.code().into()),
        ("EXPDRV_SEV_ERROR", Severity::Error.code().into()),
        ("EXPDRV_SEV_FATAL", Severity::Fatal.code().into()),
        ("EXPDRV_CAT_NIC", Category::Nic.code().into()),
        ("EXPDRV_CAT_FC", Category::Fc.code().into()),
        ("EXPDRV_CAT_HA_SS", Category::HaSs.code().into()),
        ("EXPDRV_CAT_HA_AM", Category::HaAm.code().into()),
        ("EXPDRV_CAT_HA_RS", Category::HaRs.code().into()),
        ("EXPDRV_CAT_SPS", Category::Sps.code().into()),
        ("EXPDRV_CATEGORY_NAME_MAX", CATEGORY_NAME_MAX as u64),
        ("EXPDRV_EV_NIC_LINK_DOWN", event::NIC_LINK_DOWN.into()),
        ("EXPDRV_EV_NIC_LINK_UP", event::NIC_LINK_UP.into()),
        ("EXPDRV_EV_NIC_HW_ERROR", event::NIC_HW_ERROR.into()),
        ("EXPDRV_EV_FC_PORT_OFFLINE", event::FC_PORT_OFFLINE.into()),
        ("EXPDRV_EV_FC_PORT_ONLINE", event::FC_PORT_ONLINE.into()),
        ("EXPDRV_EV_FC_PATH_LOST", event::FC_PATH_LOST.into()),
        ("EXPDRV_IOC_MAGIC", EXPDRV_IOC_MAGIC.into()),
        ("EXPDRV_IOC_GET_INFO", EXPDRV_IOC_GET_INFO),
        ("EXPDRV_IOC_SNAPSHOT", EXPDRV_IOC_SNAPSHOT),
        ("EXPDRV_IOC_ACK", EXPDRV_IOC_ACK),
        // From <linux/netlink.h>, mirrored by the walker.
        ("NLMSG_HDRLEN", NLMSG_HDRLEN as u64),
        ("NLMSG_NOOP", NLMSG_NOOP.into()),
        ("NLMSG_DONE", NLMSG_DONE.into()),
        ("NETLINK_USERSOCK", NETLINK_USERSOCK as u64),
    ];
    // The function-like macro, for every category (3 = HA/SS included).
    const GENERIC_FATAL: [&str; 6] = [
        "EXPDRV_EV_GENERIC_FATAL(1)",
        "EXPDRV_EV_GENERIC_FATAL(2)",
        "EXPDRV_EV_GENERIC_FATAL(3)",
        "EXPDRV_EV_GENERIC_FATAL(4)",
        "EXPDRV_EV_GENERIC_FATAL(5)",
        "EXPDRV_EV_GENERIC_FATAL(6)",
    ];
    for (expr, cat) in GENERIC_FATAL.into_iter().zip(Category::ALL) {
        c.push((expr, event::generic_fatal(cat.code()).into()));
    }
    c
}

/// Runs `cmd`; panics with a clear message if it cannot be started (`cc`
/// missing) or fails.
fn run(cmd: &mut Command, what: &str) -> Output {
    let out = match cmd.output() {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "{what}: `{}` was not found ({e}). The C ABI tests need a C compiler \
             named `cc` on PATH (e.g. `apt-get install gcc`); they fail rather than skip.",
            cmd.get_program().to_string_lossy()
        ),
        Err(e) => panic!("{what}: cannot run {cmd:?}: {e}"),
    };
    assert!(
        out.status.success(),
        "{what} failed ({}): {cmd:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "faultbridge-ffi-c-abi-{tag}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The names of the header's object-like and function-like macros, except the
/// include guard.
fn header_defines() -> BTreeSet<String> {
    let text = std::fs::read_to_string(header_path()).unwrap();
    text.lines()
        .filter_map(|l| l.trim_start().strip_prefix("#define"))
        .map(|rest| {
            rest.trim_start()
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .next()
                .unwrap()
                .to_owned()
        })
        .filter(|name| name != "_UAPI_LINUX_EXPDRV_H")
        .collect()
}

fn c_program(fields: &[Field], structs: &[(&str, usize)], constants: &[(&str, u64)]) -> String {
    let mut c = String::new();
    c.push_str(
        "#include <stddef.h>\n#include <stdio.h>\n#include <string.h>\n\
         #include <linux/netlink.h>\n",
    );
    writeln!(c, "#include \"{}\"\n", header_path().display()).unwrap();
    c.push_str("int main(void)\n{\n");
    for (s, _) in structs {
        writeln!(
            c,
            "\tprintf(\"sizeof {s} %zu\\n\", sizeof(struct {s}));\n\
             \tprintf(\"alignof {s} %zu\\n\", offsetof(struct {{ char c; struct {s} s; }}, s));"
        )
        .unwrap();
    }
    for f in fields {
        let (s, n) = (f.c_struct, f.name);
        writeln!(
            c,
            "\tprintf(\"offsetof {s}.{n} %zu\\n\", offsetof(struct {s}, {n}));\n\
             \tprintf(\"sizeof {s}.{n} %zu\\n\", sizeof(((struct {s} *)0)->{n}));"
        )
        .unwrap();
        if f.integer {
            // Unsigned iff 0 - 1 stored in the field reads back as positive.
            writeln!(
                c,
                "\t{{ struct {s} v; memset(&v, 0, sizeof v); v.{n} -= 1;\n\
                 \t  printf(\"unsigned {s}.{n} %d\\n\", v.{n} > 0); }}"
            )
            .unwrap();
        }
    }
    for (expr, _) in constants {
        writeln!(
            c,
            "\tprintf(\"const {expr} %llu\\n\", (unsigned long long)({expr}));"
        )
        .unwrap();
    }
    c.push_str("\treturn 0;\n}\n");
    c
}

#[test]
fn c_header_layout_and_constants_match_rust() {
    let fields = fields();
    let structs = structs();
    let constants = constants();

    // Every #define of the header is checked.
    let checked: BTreeSet<String> = constants
        .iter()
        .map(|(e, _)| e.split('(').next().unwrap().to_owned())
        .collect();
    let unchecked: Vec<_> = header_defines().difference(&checked).cloned().collect();
    assert!(
        unchecked.is_empty(),
        "expdrv.h defines {unchecked:?}, which this test does not compare with Rust; add them"
    );

    let tmp = TempDir::new("layout");
    let src = tmp.0.join("abi.c");
    let exe = tmp.0.join("abi");
    std::fs::write(&src, c_program(&fields, &structs, &constants)).unwrap();
    run(
        Command::new("cc")
            .arg("-std=c99")
            .arg("-Wall")
            .arg("-o")
            .arg(&exe)
            .arg(&src),
        "compiling the C ABI probe",
    );
    let out = run(&mut Command::new(&exe), "running the C ABI probe");
    let stdout = String::from_utf8(out.stdout).unwrap();

    let mut c_side: BTreeMap<String, u64> = BTreeMap::new();
    for line in stdout.lines() {
        let (key, value) = line.rsplit_once(' ').unwrap();
        let value: u64 = value
            .parse()
            .unwrap_or_else(|e| panic!("probe line {line:?}: {e}"));
        assert!(
            c_side.insert(key.to_owned(), value).is_none(),
            "duplicate {key}"
        );
    }
    let c = |key: String| -> u64 {
        *c_side
            .get(&key)
            .unwrap_or_else(|| panic!("the probe printed no {key:?}"))
    };

    let mut mismatches = Vec::new();
    let mut check = |key: String, rust: u64| {
        let cv = c(key.clone());
        if cv != rust {
            mismatches.push(format!(
                "{key}: C {cv} (0x{cv:x}), Rust {rust} (0x{rust:x})"
            ));
        }
    };
    let rust_align = [
        ("expdrv_record", std::mem::align_of::<RecordHeaderRaw>()),
        ("expdrv_info", std::mem::align_of::<ExpdrvInfoRaw>()),
        ("nlmsghdr", std::mem::align_of::<NlMsgHdrRaw>()),
    ];
    for (s, size) in &structs {
        check(format!("sizeof {s}"), *size as u64);
    }
    for (s, align) in rust_align {
        check(format!("alignof {s}"), align as u64);
    }
    for f in &fields {
        let (s, n) = (f.c_struct, f.name);
        check(format!("offsetof {s}.{n}"), f.offset as u64);
        check(format!("sizeof {s}.{n}"), f.size as u64);
        if f.integer {
            check(format!("unsigned {s}.{n}"), 1);
        }
    }
    for (expr, rust) in &constants {
        check(format!("const {expr}"), *rust);
    }
    assert!(
        mismatches.is_empty(),
        "C and Rust disagree:\n  {}",
        mismatches.join("\n  ")
    );

    // The field tables cover every byte of each struct: no field is missing
    // from the comparison and there is no hidden padding.
    for (s, size) in &structs {
        let mut end = 0;
        for f in fields.iter().filter(|f| f.c_struct == *s) {
            assert_eq!(
                f.offset, end,
                "{s}.{}: gap or unlisted field before it",
                f.name
            );
            end = f.offset + f.size;
        }
        assert_eq!(end, *size, "{s}: unlisted bytes after the last field");
    }
}

#[test]
fn c_header_is_clean_pedantic_c99() {
    let tmp = TempDir::new("pedantic");
    let src = tmp.0.join("pedantic.c");
    // The header alone, plus a use of every struct and function-like macro so
    // that their expansions are compiled too.
    let program = format!(
        "#include \"{}\"\n\
         #include \"{}\" /* include guard */\n\
         unsigned int expdrv_pedantic_probe(const struct expdrv_record *r,\n\
         \t\t\t\t   const struct expdrv_info *i);\n\
         unsigned int expdrv_pedantic_probe(const struct expdrv_record *r,\n\
         \t\t\t\t   const struct expdrv_info *i)\n\
         {{\n\
         \tunsigned long req[3];\n\
         \treq[0] = EXPDRV_IOC_GET_INFO;\n\
         \treq[1] = EXPDRV_IOC_SNAPSHOT;\n\
         \treq[2] = EXPDRV_IOC_ACK;\n\
         \treturn r->magic + i->abi_version + EXPDRV_EV_GENERIC_FATAL(r->category)\n\
         \t       + (unsigned int)(req[0] + req[1] + req[2]);\n\
         }}\n",
        header_path().display(),
        header_path().display()
    );
    std::fs::write(&src, program).unwrap();
    run(
        Command::new("cc")
            .args([
                "-Wall",
                "-Wextra",
                "-Werror",
                "-std=c99",
                "-pedantic",
                "-fsyntax-only",
            ])
            .arg(&src),
        "compiling expdrv.h with -Wall -Wextra -Werror -std=c99 -pedantic",
    );
}
