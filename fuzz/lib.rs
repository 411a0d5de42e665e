//! kulisse's fuzz targets share their entry points with the corpus replay test.
#[path = "entry.rs"]
pub mod entry;
