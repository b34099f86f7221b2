//! Generates the Rust code for every contract in `proto/` with a vendored `protoc`, so the
//! build needs neither a system compiler nor the network, and emits the file descriptor set
//! that gRPC reflection serves and pbjson reads.

use std::env;
use std::path::PathBuf;

const PROTO_ROOT: &str = "../../proto";

const PROTO_FILES: &[&str] = &[
    "../../proto/easel/jobs/v1/jobs.proto",
    "../../proto/easel/jobs/internal/v1/jobs_internal.proto",
    "../../proto/easel/models/v1/models.proto",
    "../../proto/easel/account/v1/account.proto",
    "../../proto/easel/auth/v1/auth.proto",
    "../../proto/easel/storage/v1/storage.proto",
    "../../proto/easel/bridge/v1/bridge.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let well_known_types = protoc_bin_vendored::include_path()?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let descriptor_path = out_dir.join("easel_descriptor.bin");

    let mut prost_config = tonic_prost_build::Config::new();
    prost_config.protoc_executable(protoc);

    tonic_prost_build::configure()
        .file_descriptor_set_path(&descriptor_path)
        // Well-known types come from pbjson-types so every message has the proto3 JSON mapping.
        // Unimplemented RPCs answer UNIMPLEMENTED until their service implements them.
        .generate_default_stubs(true)
        .compile_well_known_types(true)
        .extern_path(".google.protobuf", "::pbjson_types")
        .compile_with_config(
            prost_config,
            &PROTO_FILES.iter().map(PathBuf::from).collect::<Vec<_>>(),
            &[PathBuf::from(PROTO_ROOT), well_known_types],
        )?;

    let descriptor_set = std::fs::read(&descriptor_path)?;
    pbjson_build::Builder::new()
        .register_descriptors(&descriptor_set)?
        .build(&[".easel"])?;

    println!("cargo:rerun-if-changed={PROTO_ROOT}");
    Ok(())
}
