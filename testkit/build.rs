//! Compiles every file of `../proto/` (the same list as the root build.rs)
//! into prost messages plus tonic client AND server stubs, with protox (no
//! `protoc` needed).

const PROTO_FILES: &[&str] = &[
    "datamodel.proto",
    "sandbox.proto",
    "openshell.proto",
    "inference.proto",
    "compute_driver.proto",
    "credentials_driver.proto",
    "grpc/health/v1/health.proto",
    "grpc/reflection/v1/reflection.proto",
    "grpc/reflection/v1alpha/reflection.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=../proto");
    let mut compiler = protox::Compiler::new(["../proto"])?;
    compiler.include_imports(true);
    compiler.open_files(PROTO_FILES)?;
    let fds = compiler.file_descriptor_set();
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .build_transport(true)
        .include_file("pb.rs")
        .compile_fds(fds)?;
    Ok(())
}
