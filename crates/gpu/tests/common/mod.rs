//! Shared by the GPU crate's integration tests.
pub mod pages;
pub mod rows;
