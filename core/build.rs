//! Compiles Kubernetes' own protobuf schemas (`proto/`, vendored from k8s.io/api and
//! k8s.io/apimachinery) into a descriptor set that `objects::protobuf` loads at run time.
//!
//! `protox` is a protobuf compiler written in Rust: the build needs no system `protoc`.

fn main() {
    const FILES: &[&str] = &[
        "k8s.io/api/core/v1/generated.proto",
        "k8s.io/api/apps/v1/generated.proto",
        "k8s.io/api/coordination/v1/generated.proto",
        "k8s.io/api/discovery/v1/generated.proto",
        "k8s.io/api/rbac/v1/generated.proto",
        "k8s.io/api/authentication/v1/generated.proto",
        "k8s.io/api/authorization/v1/generated.proto",
        "k8s.io/apimachinery/pkg/apis/meta/v1/generated.proto",
        "k8s.io/apimachinery/pkg/runtime/generated.proto",
    ];
    println!("cargo:rerun-if-changed=proto");
    let bytes = protox::Compiler::new(["proto"])
        .and_then(|mut c| {
            c.include_imports(true).open_files(FILES)?;
            Ok(c.encode_file_descriptor_set())
        })
        .unwrap_or_else(|e| panic!("compiling the vendored Kubernetes protos failed: {e}"));
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    std::fs::write(out.join("k8s-descriptors.bin"), bytes).expect("writing the descriptor set");
}
