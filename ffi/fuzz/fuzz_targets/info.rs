//! `struct expdrv_info` as `EXPDRV_IOC_GET_INFO` fills it: any 56 bytes are a
//! valid `ExpdrvInfoRaw`, so what is fuzzed is `driver_name()`, the one
//! field the bridge decodes (it logs it). Nothing may panic; the name holds
//! no NUL, is the field's bytes up to the first NUL when they are UTF-8, and
//! otherwise their lossy decoding.
#![no_main]

use faultbridge_ffi::wire::info::ExpdrvInfoRaw;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(bytes) = data.first_chunk::<56>() else {
        return;
    };
    let mut field = [0u8; 32];
    field.copy_from_slice(&bytes[24..56]);
    let info = ExpdrvInfoRaw {
        abi_version: u32::from_ne_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]),
        driver_name: field,
        ..ExpdrvInfoRaw::default()
    };
    let name = info.driver_name();
    assert!(!name.contains('\0'));
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    match std::str::from_utf8(&field[..end]) {
        Ok(s) => assert_eq!(name, s),
        Err(_) => {
            assert!(name.contains(char::REPLACEMENT_CHARACTER));
            assert_eq!(name, String::from_utf8_lossy(&field[..end]));
        }
    }
});
