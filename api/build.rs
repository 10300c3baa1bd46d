//! Generates the tonic client and server for `proto/ward/v1/*.proto` with the protoc binary
//! vendored by `protoc-bin-vendored`, so a fresh machine needs no system protoc.

const WORKLOAD_API: &str = "proto/spiffe/workload.proto";
/// The subset of Envoy's secret discovery service ward serves.
const SDS: &str = "proto/envoy/sds.proto";

/// Where protoc-bin-vendored keeps the well-known types (`google/protobuf/*.proto`).
fn include() -> Result<String, Box<dyn std::error::Error>> {
    Ok(protoc_bin_vendored::include_path()?.display().to_string())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/ward/v1/identity.proto",
        "proto/ward/v1/policy.proto",
        "proto/ward/v1/bundle.proto",
        "proto/ward/v1/discovery.proto",
        "proto/ward/v1/telemetry.proto",
    ];
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure()
        .codec_path("crate::codec::SmallBufferCodec")
        .build_client(true)
        .build_server(true)
        .compile_with_config(config, &protos, &["proto"])?;
    // The SPIFFE Workload API: no package, so its code lands in `_.rs`; the well-known
    // `google.protobuf.Struct` of its claims maps to prost-types. Envoy's SDS beside it.
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_with_config(config, &[WORKLOAD_API, SDS], &["proto", &include()?])?;
    println!("cargo:rerun-if-changed={WORKLOAD_API}");
    println!("cargo:rerun-if-changed={SDS}");
    for proto in &protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    Ok(())
}
