//! Shared by the GPU crate's integration tests.
pub mod compressed;
pub mod pages;
pub mod rows;
