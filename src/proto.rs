//! The prost-generated protobuf types, one module per protobuf package, and
//! the encoded file descriptor set that server reflection serves.
//!
//! Generated code is not held to the crate's documentation lints.
#![allow(missing_docs, clippy::all, clippy::pedantic, unreachable_pub)]

/// The encoded `google.protobuf.FileDescriptorSet` of every file in `proto/`
/// and its imports, without source info.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptor.bin"));

pub mod openshell {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/openshell.v1.rs"));
    }
    pub mod datamodel {
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/openshell.datamodel.v1.rs"));
        }
    }
    pub mod sandbox {
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/openshell.sandbox.v1.rs"));
        }
    }
    pub mod inference {
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/openshell.inference.v1.rs"));
        }
    }
    pub mod compute {
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/openshell.compute.v1.rs"));
        }
    }
    pub mod credentials {
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/openshell.credentials.v1.rs"));
        }
    }
}

pub mod google {
    pub mod protobuf {
        include!(concat!(env!("OUT_DIR"), "/google.protobuf.rs"));
    }
}

pub mod grpc {
    pub mod health {
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/grpc.health.v1.rs"));
        }
    }
    pub mod reflection {
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/grpc.reflection.v1.rs"));
        }
        pub mod v1alpha {
            include!(concat!(env!("OUT_DIR"), "/grpc.reflection.v1alpha.rs"));
        }
    }
}
