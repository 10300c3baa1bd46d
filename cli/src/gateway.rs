//! `ward gateway key create|revoke|list`: the gateway's API keys, in the key store file its
//! configuration names (`api_keys: { store: FILE }`); the gateway follows the file.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use clap::Subcommand;
use ward_certs::api_key::KeyStore;

use crate::Outcome;

#[derive(Debug, Subcommand)]
pub enum GatewayCommand {
    /// API keys for partner integrations.
    #[command(subcommand)]
    Key(KeyCommand),
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Create a key; prints only the key, which is shown this once (the store keeps its
    /// hash). A principal may hold several keys, for rotation with overlap.
    Create {
        /// The key store (created, mode 0600, if missing).
        #[arg(long, value_name = "FILE")]
        store: PathBuf,
        /// Who the key stands for (policy sees `apikey/PRINCIPAL`).
        #[arg(long)]
        principal: String,
        /// A claim policy sees (`request.auth.claims[NAME]`); repeatable.
        #[arg(long = "claim", value_name = "NAME=VALUE", value_parser = claim)]
        claims: Vec<(String, String)>,
        /// How long the key is valid (default: until revoked).
        #[arg(long, value_name = "DURATION", value_parser = crate::parse_duration)]
        expires_in: Option<Duration>,
    },
    /// Revoke a key by its id (from `list`); the gateway refuses it within a second or two.
    Revoke {
        #[arg(long, value_name = "FILE")]
        store: PathBuf,
        id: String,
    },
    /// List the keys: id, principal, created, expires, status. Never a key or a hash.
    List {
        #[arg(long, value_name = "FILE")]
        store: PathBuf,
    },
}

fn claim(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("{s:?} is not NAME=VALUE")),
    }
}

fn now() -> u64 {
    ward_runtime::time::unix_secs(SystemTime::now())
}

pub fn run(cmd: GatewayCommand) -> anyhow::Result<Outcome> {
    let GatewayCommand::Key(cmd) = cmd;
    match cmd {
        KeyCommand::Create {
            store,
            principal,
            claims,
            expires_in,
        } => {
            let mut keys = KeyStore::read(&store, true)?;
            let claims: BTreeMap<String, String> = claims.into_iter().collect();
            let expires = expires_in.map(|d| now() + d.as_secs());
            let (id, key) = keys.create(&principal, claims, expires, now())?;
            keys.write(&store).context("writing the key store")?;
            eprintln!("ward: key {id} created for {principal}");
            println!("{key}");
        }
        KeyCommand::Revoke { store, id } => {
            let mut keys = KeyStore::read(&store, false)?;
            keys.revoke(&id, now())?;
            keys.write(&store).context("writing the key store")?;
            eprintln!("ward: key {id} revoked");
        }
        KeyCommand::List { store } => {
            let keys = KeyStore::read(&store, false)?;
            let when = |t: u64| {
                ward_runtime::time::rfc3339(SystemTime::UNIX_EPOCH + Duration::from_secs(t))
            };
            println!(
                "{:<14} {:<24} {:<22} {:<22} STATUS",
                "ID", "PRINCIPAL", "CREATED", "EXPIRES"
            );
            for k in &keys.keys {
                println!(
                    "{:<14} {:<24} {:<22} {:<22} {}",
                    k.id,
                    k.principal,
                    when(k.created),
                    k.expires.map_or("never".to_owned(), when),
                    k.status(now())
                );
            }
        }
    }
    Ok(Outcome::Success)
}
