//! `easel keys create|list|revoke`.

use std::time::Duration;

use easel_proto::account::v1::{CreateApiKeyRequest, ListApiKeysRequest, RevokeApiKeyRequest};

use crate::client::Clients;
use crate::output;

/// The `keys` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum KeysCommand {
    /// Creates a key; its secret is printed once.
    Create {
        /// A name for people.
        name: String,
        /// Lifetime, e.g. 30d (no expiry when absent).
        #[arg(long, value_parser = humantime::parse_duration)]
        ttl: Option<Duration>,
    },
    /// Lists your keys (never their secrets).
    List,
    /// Revokes a key at once.
    Revoke {
        /// The key id.
        id: String,
    },
}

/// Runs a `keys` subcommand.
pub async fn run(clients: &mut Clients, command: KeysCommand, json: bool) -> anyhow::Result<()> {
    match command {
        KeysCommand::Create { name, ttl } => {
            let ttl = ttl
                .map(pbjson_types::Duration::try_from)
                .transpose()
                .map_err(|_| anyhow::anyhow!("--ttl is too long"))?;
            let created = clients
                .account
                .create_api_key(CreateApiKeyRequest {
                    name,
                    scopes: Vec::new(),
                    ttl,
                })
                .await?
                .into_inner();
            if json {
                return output::print_json(&created);
            }
            if let Some(key) = &created.api_key {
                output::line(format!("created {} ({})", key.id, key.name));
            }
            output::line(format!("secret: {}", created.secret));
            output::line("store it now: it is not shown again");
        }
        KeysCommand::List => {
            let mut page_token = String::new();
            let mut keys = Vec::new();
            loop {
                let page = clients
                    .account
                    .list_api_keys(ListApiKeysRequest {
                        page_size: 100,
                        page_token,
                    })
                    .await?
                    .into_inner();
                keys.extend(page.api_keys);
                if page.next_page_token.is_empty() {
                    break;
                }
                page_token = page.next_page_token;
            }
            if json {
                return output::print_json(&keys);
            }
            for key in &keys {
                let state = if key.revoke_time.is_some() {
                    "revoked"
                } else {
                    "active"
                };
                output::line(format!(
                    "{}  easel_{}_…  {:<8} {}",
                    key.id, key.prefix, state, key.name
                ));
            }
        }
        KeysCommand::Revoke { id } => {
            let revoked = clients
                .account
                .revoke_api_key(RevokeApiKeyRequest { key_id: id })
                .await?
                .into_inner();
            if json {
                return output::print_json(&revoked);
            }
            if let Some(key) = &revoked.api_key {
                output::line(format!("revoked {}", key.id));
            }
        }
    }
    Ok(())
}
