//! Compiles `proto/flotilla/v1/*.proto` with protox (pure Rust), so building
//! Flotilla needs no `protoc` on the machine.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../proto");
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
