//! Generates the tonic client and server of the demo's own service, `ledger.v1.Ledger`
//! (tonic's default codec: the demo's apps are ordinary apps), with the vendored protoc.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/ledger/v1/ledger.proto"];
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_with_config(config, &protos, &["proto"])?;
    for proto in &protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    Ok(())
}
