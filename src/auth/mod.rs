//! Bearer-token authentication: tokens with roles (`ingest`, `read`, `admin`), stored as
//! SHA-256 hashes of high-entropy random tokens, from the config file or a tokens file.
//!
//! Tokens file, one token per line (`#` starts a comment):
//!
//! ```text
//! # name       role    hash                                                                     expires (optional)
//! collector    ingest  sha256:3b0c…e1                                                           2027-06-30T00:00:00Z
//! grafana      read    sha256:9a41…07
//! ```

pub mod headers;
pub mod login;
pub mod middleware;
pub mod origin;
pub mod policy;

use std::path::Path;

use anyhow::{Context, bail};
use base64::Engine as _;
use chrono::{DateTime, Utc};
use rand::RngCore;
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Send telemetry: OTLP (gRPC and HTTP) and Prometheus remote write.
    Ingest,
    /// Query: SQL, the query APIs, the UI.
    Read,
    /// Everything, including changes to a running server (rule reload).
    Admin,
}

impl Role {
    /// Parses `ingest`, `read` or `admin`.
    pub fn parse(s: &str) -> anyhow::Result<Role> {
        match s {
            "ingest" => Ok(Role::Ingest),
            "read" => Ok(Role::Read),
            "admin" => Ok(Role::Admin),
            other => bail!("role {other:?} is not ingest, read or admin"),
        }
    }

    /// The name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Ingest => "ingest",
            Role::Read => "read",
            Role::Admin => "admin",
        }
    }

    /// Whether a token of this role may do what `needed` names.
    pub fn allows(self, needed: Role) -> bool {
        self == Role::Admin || self == needed
    }
}

/// A token as configured: its name, role, hash and expiry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    /// A name for people (logs, audits); never shown to clients.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// `sha256:` and the hex SHA-256 of the token.
    pub hash: String,
    /// When it stops working (RFC 3339), if ever.
    pub expires: Option<String>,
}

/// One usable token.
#[derive(Debug, Clone)]
struct Token {
    name: String,
    role: Role,
    hash: [u8; 32],
    expires: Option<DateTime<Utc>>,
}

/// Why a presented token is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// No token, an unknown one, or an expired one (401; the client is not told which).
    Unauthenticated,
    /// A valid token whose role may not do this (403).
    Forbidden,
}

/// The configured tokens. Empty means authentication is off.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    tokens: Vec<Token>,
}

impl Tokens {
    /// Tokens from the config file's `[[token]]` tables and a tokens file.
    pub fn load(entries: &[TokenEntry], file: Option<&Path>) -> anyhow::Result<Tokens> {
        let mut tokens = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            tokens.push(
                parse_entry(&e.name, e.role, &e.hash, e.expires.as_deref())
                    .with_context(|| format!("[[token]] number {}", i + 1))?,
            );
        }
        if let Some(path) = file {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read tokens file {}", path.display()))?;
            for (n, line) in text.lines().enumerate() {
                let line = line.split('#').next().unwrap_or_default().trim();
                if line.is_empty() {
                    continue;
                }
                let fields: Vec<&str> = line.split_whitespace().collect();
                let at = || format!("{}:{}", path.display(), n + 1);
                if !(3..=4).contains(&fields.len()) {
                    bail!("{}: expected `NAME ROLE sha256:HEX [EXPIRES]`", at());
                }
                let role = Role::parse(fields[1]).with_context(at)?;
                tokens.push(
                    parse_entry(fields[0], role, fields[2], fields.get(3).copied())
                        .with_context(at)?,
                );
            }
        }
        let mut names: Vec<&str> = tokens.iter().map(|t| t.name.as_str()).collect();
        names.sort_unstable();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            bail!("token name {:?} is used twice", w[0]);
        }
        Ok(Tokens { tokens })
    }

    /// Whether any token is configured.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Checks a presented token (the raw secret) for something that needs `needed`.
    /// Every configured hash is compared, in constant time, whatever matches.
    pub fn check(
        &self,
        presented: Option<&str>,
        needed: Role,
        now: DateTime<Utc>,
    ) -> Result<&str, Denied> {
        let Some(presented) = presented.filter(|p| !p.is_empty()) else {
            return Err(Denied::Unauthenticated);
        };
        let hash: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found: Option<&Token> = None;
        for t in &self.tokens {
            if constant_time_eq(&t.hash, &hash) {
                found = Some(t);
            }
        }
        let t = found.ok_or(Denied::Unauthenticated)?;
        if t.expires.is_some_and(|e| e <= now) {
            return Err(Denied::Unauthenticated);
        }
        if !t.role.allows(needed) {
            return Err(Denied::Forbidden);
        }
        Ok(&t.name)
    }
}

fn parse_entry(name: &str, role: Role, hash: &str, expires: Option<&str>) -> anyhow::Result<Token> {
    let hex_part = hash
        .strip_prefix("sha256:")
        .context("the hash must look like sha256:<64 hex digits> (see `periscope token create`)")?;
    let bytes = hex::decode(hex_part).context("the hash is not hex")?;
    let hash: [u8; 32] = bytes
        .try_into()
        .map_err(|_| anyhow::anyhow!("a SHA-256 hash has 64 hex digits"))?;
    let expires = expires
        .map(|e| {
            DateTime::parse_from_rfc3339(e)
                .map(|d| d.with_timezone(&Utc))
                .with_context(|| {
                    format!("expiry {e:?} is not an RFC 3339 time like 2027-01-01T00:00:00Z")
                })
        })
        .transpose()?;
    if name.is_empty() {
        bail!("a token needs a name");
    }
    Ok(Token {
        name: name.to_owned(),
        role,
        hash,
        expires,
    })
}

/// Compares two hashes without a data-dependent early exit.
fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b) {
        diff |= x ^ y;
    }
    std::hint::black_box(diff) == 0
}

/// A new random token (256 bits, URL-safe) and its tokens-file hash.
pub fn new_token() -> (String, String) {
    let mut secret = [0u8; 32];
    rand::rng().fill_bytes(&mut secret);
    let token = format!(
        "psc_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret)
    );
    let hash = format!("sha256:{}", hex::encode(Sha256::digest(token.as_bytes())));
    (token, hash)
}

/// `periscope token` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum TokenCommand {
    /// Print a new token and the tokens-file line that accepts it.
    Create {
        /// `ingest`, `read` or `admin`.
        #[arg(long)]
        role: String,
        /// A name for the token (default: the role and a random suffix).
        #[arg(long)]
        name: Option<String>,
        /// Lifetime, e.g. `90d`; the token never expires without it.
        #[arg(long, value_name = "DURATION")]
        expires_in: Option<String>,
    },
}

/// Runs a `periscope token` command.
pub fn run(cmd: TokenCommand) -> anyhow::Result<()> {
    match cmd {
        TokenCommand::Create {
            role,
            name,
            expires_in,
        } => {
            let role = Role::parse(&role)?;
            let (token, hash) = new_token();
            let name = name.unwrap_or_else(|| format!("{}-{}", role.as_str(), &hash[7..15]));
            if name.is_empty() || name.contains(char::is_whitespace) || name.contains('#') {
                bail!("name {name:?}: use letters, digits, '-' or '_'");
            }
            let expires = expires_in
                .map(|d| {
                    let d = crate::config::parse_duration("expires-in", &d)?;
                    let at = Utc::now() + chrono::Duration::from_std(d)?;
                    Ok::<_, anyhow::Error>(at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                })
                .transpose()?;
            println!("token: {token}");
            println!("Give the token to the client (Authorization: Bearer {token});");
            println!("add this line to the tokens file (Periscope stores only the hash):");
            match expires {
                Some(e) => println!("{name} {} {hash} {e}", role.as_str()),
                None => println!("{name} {} {hash}", role.as_str()),
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_allow_what_they_should() {
        assert!(Role::Admin.allows(Role::Read));
        assert!(Role::Admin.allows(Role::Ingest));
        assert!(Role::Read.allows(Role::Read));
        assert!(!Role::Read.allows(Role::Ingest));
        assert!(!Role::Read.allows(Role::Admin));
        assert!(!Role::Ingest.allows(Role::Read));
    }

    #[test]
    fn tokens_are_checked_by_hash_role_and_expiry() {
        let (ingest, ingest_hash) = new_token();
        let (old, old_hash) = new_token();
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("tokens");
        std::fs::write(
            &file,
            format!(
                "# comment\ncollector ingest {ingest_hash}\n\nold read {old_hash} 2020-01-01T00:00:00Z # expired\n"
            ),
        )
        .expect("write");
        let tokens = Tokens::load(&[], Some(&file)).expect("load");
        let now = Utc::now();
        assert_eq!(
            tokens.check(Some(&ingest), Role::Ingest, now),
            Ok("collector")
        );
        assert_eq!(
            tokens.check(Some(&ingest), Role::Read, now),
            Err(Denied::Forbidden)
        );
        assert_eq!(
            tokens.check(Some(&old), Role::Read, now),
            Err(Denied::Unauthenticated)
        );
        assert_eq!(
            tokens.check(Some("psc_wrong"), Role::Ingest, now),
            Err(Denied::Unauthenticated)
        );
        assert_eq!(
            tokens.check(None, Role::Ingest, now),
            Err(Denied::Unauthenticated)
        );
        assert_eq!(
            tokens.check(Some(""), Role::Ingest, now),
            Err(Denied::Unauthenticated)
        );
    }

    #[test]
    fn bad_token_lines_name_the_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("tokens");
        for (text, want) in [
            ("a ingest sha256:zz\n", ":1"),
            ("\na writer sha256:00\n", ":2"),
            ("a ingest md5:00\n", "sha256"),
            ("a ingest\n", "NAME ROLE"),
        ] {
            std::fs::write(&file, text).expect("write");
            let e = format!("{:#}", Tokens::load(&[], Some(&file)).expect_err(text));
            assert!(e.contains(want), "{text:?}: {e}");
        }
        let (_, h) = new_token();
        std::fs::write(&file, format!("a read {h}\na admin {h}\n")).expect("write");
        assert!(Tokens::load(&[], Some(&file)).is_err(), "duplicate names");
    }
}
