#![no_main]
// `cargo fuzz run patch`: see fuzz/entry.rs, `patch_bytes`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = kulisse_fuzz::entry::patch_bytes(data);
});
