//! Gateway mode (`ward-proxy gateway`, being built): the edge of the mesh. So far: [`jwt`],
//! end-user tokens checked against configured issuers.

pub mod jwt;
