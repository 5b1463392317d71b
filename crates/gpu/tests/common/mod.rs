//! Shared by the GPU crate's integration tests.
pub mod array_pages;
pub mod compressed;
pub mod jsonb_pages;
pub mod pages;
pub mod rows;
pub mod server_pages;
