//! Code generated from `proto/` by build.rs.

/// Peer traffic (`proto/peer.proto`).
#[allow(clippy::all, missing_docs)]
pub mod peer {
    tonic::include_proto!("pgkeel.peer");
}

/// The admin service (`proto/admin.proto`).
#[allow(clippy::all, missing_docs)]
pub mod admin {
    tonic::include_proto!("pgkeel.admin");
}
