#![no_main]
// `cargo fuzz run manifest`: see fuzz/entry.rs, `manifest`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = kulisse_fuzz::entry::manifest(data);
});
