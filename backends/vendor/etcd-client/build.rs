// kulisse's copy of etcd-client 0.17.0 (see README.md in this folder).
//
// The one change from the published crate is in this file (and `protox` among the
// build-dependencies in Cargo.toml): the .proto files are compiled by `protox`, a protobuf
// compiler written in Rust, into a `FileDescriptorSet`, which tonic-prost-build turns into
// Rust (`compile_fds`). The published build script hands them to tonic-prost-build's
// `compile_protos`, which runs a system `protoc` (found on PATH or in $PROTOC) and stops with
// "Could not find `protoc`" on a machine without one. The generated Rust is the same, byte
// for byte, as with protoc (tonic-prost-build generates it from the same descriptors).

#[cfg(feature = "build-server")]
fn should_build_server() -> bool {
    true
}

#[cfg(not(feature = "build-server"))]
fn should_build_server() -> bool {
    false
}

fn main() {
    let proto_root = "proto";
    println!("cargo:rerun-if-changed={proto_root}");

    // With source info (comments become doc comments) and imports, as prost-build asks
    // protoc for them.
    let descriptors = protox::compile(
        [
            "proto/auth.proto",
            "proto/kv.proto",
            "proto/rpc.proto",
            "proto/v3election.proto",
            "proto/v3lock.proto",
        ],
        [proto_root],
    )
    .expect("Failed to parse the proto files");

    tonic_prost_build::configure()
        .build_server(should_build_server())
        // What `compile_protos` adds by itself, so the generated code is byte for byte the same.
        .type_attribute(".", "#[allow(clippy::all)]")
        .compile_fds(descriptors)
        .expect("Failed to compile proto files");
}
