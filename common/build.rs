//! Compiles `proto/flotilla/v1/*.proto` with protox (pure Rust), so building
//! Flotilla needs no `protoc` on the machine.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read at run time: a build script compiled once can be reused by cargo
    // for another checkout that shares the target folder (CARGO_TARGET_DIR),
    // and `env!` would point it at the first checkout's files.
    let root = std::path::PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../proto");
    let file = root.join("flotilla/v1/flotilla.proto");
    println!("cargo:rerun-if-changed={}", file.display());
    let descriptors = protox::compile([&file], [&root])?;
    tonic_prost_build::configure()
        .bytes(".flotilla.v1")
        // Malformed messages are INVALID_ARGUMENT, not INTERNAL (src/codec.rs).
        .codec_path("crate::codec::FlotillaCodec")
        .compile_fds(descriptors)?;
    Ok(())
}
