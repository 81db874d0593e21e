//! Where workloads run, as the control plane's backend (`control_plane::backend::Backend`):
//! `local`, processes on this machine. A kind backend is a sibling with the same trait.

pub mod local;
