#![no_main]
// `cargo fuzz run quantity`: see fuzz/entry.rs, `quantity`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = kulisse_fuzz::entry::quantity(data);
});
