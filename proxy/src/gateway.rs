//! Gateway mode (`ward-proxy gateway`, being built): the edge of the mesh. So far:
//! [`credentials`], where a request's end-user token is taken from, and [`jwt`], tokens
//! checked against configured issuers.

pub mod credentials;
pub mod jwt;
