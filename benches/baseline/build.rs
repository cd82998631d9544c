//! Server stubs for `openshell.v1.OpenShell` from slimgate's own `proto/`,
//! with default `UNIMPLEMENTED` bodies for the methods the baseline leaves
//! out (protox: no `protoc` needed).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=../../proto");
    let mut compiler = protox::Compiler::new(["../../proto"])?;
    compiler.include_imports(true);
    compiler.open_files(["openshell.proto"])?;
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(true)
        .generate_default_stubs(true)
        .include_file("pb.rs")
        .compile_fds(compiler.file_descriptor_set())?;
    Ok(())
}
