//! Where workloads run, as the control plane's backend (`control_plane::backend::Backend`):
//! `local`, processes on this machine; `kind`, a kind cluster (rendering and injection so far).

pub mod kind;
pub mod local;
