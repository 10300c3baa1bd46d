//! Unit tests of the parent module.
use super::*;
use crate::layout::{accounts_policy, ledger_policy, mesh_policy, web_policy};
use crate::view::short_serial;

#[test]
fn demo_policies_load() {
    let sources: Vec<(PathBuf, String)> = [
        ("mesh.yaml", mesh_policy()),
        ("web.yaml", web_policy()),
        ("accounts.yaml", accounts_policy()),
        ("ledger.yaml", ledger_policy()),
        ("gateway.yaml", crate::edge::gateway_policy()),
    ]
    .into_iter()
    .map(|(name, text)| (PathBuf::from(name), text))
    .collect();
    let set = ward_policy::load::load_sources(&sources);
    assert!(set.is_ok(), "{:?}", set.err());
}

#[test]
fn serials_are_shortened_for_the_table() {
    assert_eq!(short_serial("0a:1b"), "0a1b");
    assert_eq!(
        short_serial("00112233445566778899aabbccddeeff"),
        "0011223344556677…"
    );
}
