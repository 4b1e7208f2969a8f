//! Compiles the `.proto` files with protox (a pure-Rust protoc), so building
//! needs no system protoc.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "prism/keyvalue/v1/keyvalue.proto",
    "prism/timeseries/v1/timeseries.proto",
    "prism/graph/v1/graph.proto",
    "prism/plugin/v1/plugin.proto",
    "prism/admin/v1/admin.proto",
    "prism/options/v1/pii.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let out = PathBuf::from(std::env::var("OUT_DIR")?);

    let mut compiler = protox::Compiler::new([root.clone()])?;
    compiler.include_imports(true).include_source_info(true);
    compiler.open_files(PROTOS)?;

    // The descriptor set served by reflection is written with protox's own
    // encoder: re-encoding through prost_types would drop custom options.
    std::fs::write(out.join("prism_descriptor.bin"), compiler.encode_file_descriptor_set())?;

    tonic_prost_build::configure().bytes(".").compile_fds(compiler.file_descriptor_set())?;

    println!("cargo:rerun-if-changed=prism");
    Ok(())
}
