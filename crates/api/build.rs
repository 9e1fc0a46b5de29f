//! Compiles `proto/inference.proto` and `proto/optuna_storage.proto` with protox (pure
//! Rust), so building needs no `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/inference.proto");
    println!("cargo:rerun-if-changed=proto/optuna_storage.proto");
    let descriptors = protox::compile(["proto/inference.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(false)
        // Unparseable requests are INVALID_ARGUMENT, not INTERNAL (see grpc_codec.rs).
        .codec_path("crate::inference::grpc_codec::ArgCodec")
        .compile_fds(descriptors)?;
    let descriptors = protox::compile(["proto/optuna_storage.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(false)
        .compile_fds(descriptors)?;
    Ok(())
}
