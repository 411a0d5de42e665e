#![no_main]
// `cargo fuzz run selector`: see fuzz/entry.rs, `selector`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = kulisse_fuzz::entry::selector(data);
});
