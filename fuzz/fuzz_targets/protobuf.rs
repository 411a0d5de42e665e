#![no_main]
// `cargo fuzz run protobuf`: see fuzz/entry.rs, `protobuf_body`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = kulisse_fuzz::entry::protobuf_body(data);
});
