//! Whether requests need a token: the `[auth]` section of the config file and the start-up
//! decision between "tokens required", "authentication off" and "refuse to start".
//!
//! The rule: with tokens, every request needs one; without tokens, the server listens
//! only on loopback addresses, unless `insecure_no_auth` turns authentication off
//! knowingly. The OTLP ports count as authenticated when their clients must show a
//! certificate from the client CA (mTLS), since nobody else can connect to them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::bail;
use serde::Deserialize;

use super::Tokens;

/// `[auth]` in the TOML file (the tokens themselves may also be `[[token]]` tables).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSection {
    /// Tokens file; relative to the config file.
    pub tokens_file: Option<PathBuf>,
    /// Serve without authentication even on a non-loopback address.
    pub insecure_no_auth: Option<bool>,
}

/// Whether requests need tokens: yes when tokens are configured; refused when a
/// non-loopback address is bound without tokens, unless `insecure` (which turns
/// authentication off). `ingest_addrs` count as authenticated when `client_certs`: their
/// clients must show a certificate from the client CA to connect at all.
///
/// # Errors
/// When an address that is not loopback would be open without authentication.
pub fn auth_decision(
    api_addr: SocketAddr,
    ingest_addrs: &[SocketAddr],
    client_certs: bool,
    tokens: Tokens,
    insecure: bool,
) -> anyhow::Result<Option<Arc<Tokens>>> {
    if insecure {
        return Ok(None);
    }
    if !tokens.is_empty() {
        return Ok(Some(Arc::new(tokens)));
    }
    let mut open = vec![api_addr];
    if !client_certs {
        open.extend_from_slice(ingest_addrs);
    }
    if let Some(open) = open.iter().find(|a| !a.ip().is_loopback()) {
        bail!(
            "refusing to listen on {open} without authentication: add tokens (--tokens-file; \
             `periscope token create --role ingest` makes one) or pass --insecure-no-auth"
        );
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_certificates_authenticate_the_otlp_ports_but_not_the_api_port() {
        let public: SocketAddr = "0.0.0.0:4317".parse().unwrap();
        let local: SocketAddr = "127.0.0.1:7070".parse().unwrap();
        let none = crate::auth::Tokens::default;
        assert!(auth_decision(local, &[public, public], true, none(), false).is_ok());
        let err = auth_decision(local, &[public], false, none(), false).unwrap_err();
        assert!(
            err.to_string()
                .contains("refusing to listen on 0.0.0.0:4317")
        );
        let err = auth_decision(public, &[local], true, none(), false).unwrap_err();
        assert!(err.to_string().contains("refusing"), "{err}");
    }
}
