//! Who the client is: the connection's peer, or what a trusted balancer in front says. The
//! per-address limits and the gateway's `X-Forwarded-*` headers both ask here.

use std::net::{IpAddr, SocketAddr};

use anyhow::Context;
use axum::http::{HeaderMap, HeaderName};

/// How this process tells clients apart.
#[derive(Debug, Clone)]
pub(crate) struct ClientAddress {
    /// The header a trusted balancer puts the client's address in (its first entry counts);
    /// `None` when clients reach this process directly.
    header: Option<HeaderName>,
}

impl ClientAddress {
    /// From `CLIENT_ADDRESS_HEADER`.
    ///
    /// # Errors
    /// When the setting is not a valid header name.
    pub(crate) fn from_setting(header: Option<&str>) -> anyhow::Result<Self> {
        let header = header
            .map(HeaderName::try_from)
            .transpose()
            .context("CLIENT_ADDRESS_HEADER is not a header name")?;
        Ok(Self { header })
    }

    /// The client's address: from the configured header when it holds one, else the
    /// connection's peer.
    pub(crate) fn of(&self, headers: &HeaderMap, peer: SocketAddr) -> IpAddr {
        self.header
            .as_ref()
            .and_then(|name| headers.get(name))
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .and_then(|first| first.trim().parse().ok())
            .unwrap_or_else(|| peer.ip())
    }

    /// Whether a trusted balancer stands in front, so the `X-Forwarded-*` headers a request
    /// arrives with were written by it rather than made up by the client.
    pub(crate) fn behind_balancer(&self) -> bool {
        self.header.is_some()
    }
}
