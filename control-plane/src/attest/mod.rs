//! How a proxy proves who it is when it has no SVID yet.

pub mod tokens;
