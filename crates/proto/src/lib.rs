//! easel's contracts as Rust: the prost messages, tonic clients and servers, and the proto3
//! JSON mapping (serde, via pbjson) for every message in `proto/`.
//!
//! Services share nothing but these types: each module mirrors one proto package, beside the
//! [`limits`] every side checks the same way and the enums' short [`names`] every side
//! spells the same way.

#![allow(clippy::all, clippy::pedantic, missing_docs, unreachable_pub)]

/// The encoded `FileDescriptorSet` of every easel proto, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/easel_descriptor.bin"));

pub mod limits;
pub mod names;

/// Package `easel.jobs.v1`: the public job API.
pub mod jobs {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/easel.jobs.v1.rs"));
        include!(concat!(env!("OUT_DIR"), "/easel.jobs.v1.serde.rs"));
    }
    /// Package `easel.jobs.internal.v1`: the jobs service's own API behind the gateway.
    pub mod internal {
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/easel.jobs.internal.v1.rs"));
            include!(concat!(env!("OUT_DIR"), "/easel.jobs.internal.v1.serde.rs"));
        }
    }
}

/// Package `easel.models.v1`: the public model list.
pub mod models {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/easel.models.v1.rs"));
        include!(concat!(env!("OUT_DIR"), "/easel.models.v1.serde.rs"));
    }
}

/// Package `easel.account.v1`: the public account API (keys, tokens, usage, admin).
pub mod account {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/easel.account.v1.rs"));
        include!(concat!(env!("OUT_DIR"), "/easel.account.v1.serde.rs"));
    }
}

/// Package `easel.auth.v1`: internal authentication.
pub mod auth {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/easel.auth.v1.rs"));
        include!(concat!(env!("OUT_DIR"), "/easel.auth.v1.serde.rs"));
    }
}

/// Package `easel.storage.v1`: internal artifact storage.
pub mod storage {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/easel.storage.v1.rs"));
        include!(concat!(env!("OUT_DIR"), "/easel.storage.v1.serde.rs"));
    }
}

/// Package `easel.bridge.v1`: internal ComfyUI bridge.
pub mod bridge {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/easel.bridge.v1.rs"));
        include!(concat!(env!("OUT_DIR"), "/easel.bridge.v1.serde.rs"));
    }
}
