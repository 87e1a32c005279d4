//! One peer relay as `[cluster] connect` names it (spec `cluster.md` 3.1, 3.3): where to
//! dial, over which transport, with which credential, and the identity key that makes
//! `host:4443` and `https://host:4443/?jwt=x` one peer.
//!
//! This module owns reading a peer URL. It resolves the host once (at start, off the
//! core that dials) and never opens a connection.

use std::net::{SocketAddr, ToSocketAddrs};

/// The port a peer URL without one means (HTTPS, as moq-relay).
const DEFAULT_PORT: u16 = 443;

/// A configured peer relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// scheme://host:port/path: the identity key, also what logs show (never the query,
    /// which may hold a token).
    pub key: String,
    pub addr: SocketAddr,
    /// TLS SNI: the URL's host.
    pub server_name: String,
    /// `host:port` for the WebTransport CONNECT.
    pub authority: String,
    /// Path and query dialed: the CONNECT target on WebTransport, the SETUP Path on raw
    /// QUIC. Carries `jwt=` when a token is configured.
    pub path_and_query: String,
    /// `https://`: WebTransport; `moql://` or `moqt://`: raw QUIC.
    pub webtransport: bool,
    /// `?cost=N`, taken out of the URL (a link price; only 06-wip peers read it).
    pub cost: Option<u64>,
}

impl Peer {
    /// The identity key `url` has as a peer (what [`Peer::parse`] names `key`), without
    /// resolving its host: for this relay's own `node`, which need not resolve here.
    pub fn identity_key(url: &str) -> Result<String, String> {
        let parsed = reqwest::Url::parse(url).map_err(|err| format!("`{url}`: {err}"))?;
        let host = parsed
            .host_str()
            .ok_or_else(|| format!("`{url}`: no host"))?;
        let port = parsed.port().unwrap_or(DEFAULT_PORT);
        Ok(format!(
            "{}://{host}:{port}{}",
            parsed.scheme(),
            parsed.path()
        ))
    }

    /// Reads `url`; `token` (from `[cluster] token`) is appended as `jwt` unless the URL
    /// carries a non-empty one of its own.
    pub fn parse(url: &str, token: Option<&str>) -> Result<Peer, String> {
        let mut parsed = reqwest::Url::parse(url).map_err(|err| format!("`{url}`: {err}"))?;
        let webtransport = match parsed.scheme() {
            "https" => true,
            "moql" | "moqt" => false,
            "http" => {
                return Err(format!(
                    "`{url}`: http:// peers (a fingerprint fetched over plain HTTP) are not \
                     supported; use https:// with [client.tls] root or fingerprint"
                ));
            }
            scheme => return Err(format!("`{url}`: unsupported scheme `{scheme}`")),
        };
        let host = parsed
            .host_str()
            .ok_or_else(|| format!("`{url}`: no host"))?
            .to_owned();
        let port = parsed.port().unwrap_or(DEFAULT_PORT);
        let mut cost = None;
        let mut inline_token = false;
        let mut kept: Vec<(String, String)> = Vec::new();
        for (name, value) in parsed.query_pairs() {
            match name.as_ref() {
                "cost" => {
                    cost = Some(
                        value
                            .parse()
                            .map_err(|_| format!("`cost={value}` is not a whole number"))?,
                    );
                }
                "jwt" if !value.is_empty() => {
                    inline_token = true;
                    kept.push((name.into_owned(), value.into_owned()));
                }
                _ => kept.push((name.into_owned(), value.into_owned())),
            }
        }
        if !inline_token && let Some(token) = token {
            kept.push(("jwt".to_owned(), token.to_owned()));
        }
        if kept.is_empty() {
            parsed.set_query(None);
        } else {
            parsed.query_pairs_mut().clear().extend_pairs(kept);
        }
        let path_and_query = match parsed.query() {
            Some(query) => format!("{}?{query}", parsed.path()),
            None => parsed.path().to_owned(),
        };
        // `host_str` keeps an IPv6 literal's brackets, as an authority wants them.
        let authority = format!("{host}:{port}");
        let server_name = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let addr = (server_name.as_str(), port)
            .to_socket_addrs()
            .map_err(|err| format!("cannot resolve `{host}`: {err}"))?
            .next()
            .ok_or_else(|| format!("`{host}` resolved to no address"))?;
        Ok(Peer {
            key: format!("{}://{authority}{}", parsed.scheme(), parsed.path()),
            addr,
            server_name,
            authority,
            path_and_query,
            webtransport,
            cost,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_identity_key_is_the_parsed_peers_key_without_resolving() {
        for url in [
            "https://127.0.0.1:4443/?jwt=x&cost=2",
            "https://127.0.0.1/",
            "moql://127.0.0.1:9/root",
        ] {
            assert_eq!(
                Peer::identity_key(url).unwrap(),
                Peer::parse(url, None).unwrap().key
            );
        }
        assert_eq!(
            Peer::identity_key("https://relay.invalid/").unwrap(),
            "https://relay.invalid:443/"
        );
    }

    #[test]
    fn a_peer_url_keeps_its_query_but_cost_and_gets_the_token_unless_it_has_one() {
        let peer = Peer::parse("https://127.0.0.1:4443/?cost=7&x=1", Some("t0k")).unwrap();
        assert_eq!(peer.key, "https://127.0.0.1:4443/");
        assert_eq!(peer.addr, "127.0.0.1:4443".parse().unwrap());
        assert_eq!(peer.authority, "127.0.0.1:4443");
        assert_eq!(peer.path_and_query, "/?x=1&jwt=t0k");
        assert_eq!(peer.cost, Some(7));
        assert!(peer.webtransport);

        let inline = Peer::parse("moql://127.0.0.1:9/root?jwt=mine", Some("t0k")).unwrap();
        assert_eq!(inline.path_and_query, "/root?jwt=mine");
        assert!(!inline.webtransport);
        let empty = Peer::parse("https://localhost/?jwt=", Some("t0k")).unwrap();
        assert_eq!(empty.path_and_query, "/?jwt=&jwt=t0k");
        assert_eq!(empty.key, "https://localhost:443/");
        assert_eq!(
            Peer::parse("https://[::1]:5/", None).unwrap().authority,
            "[::1]:5"
        );
    }

    #[test]
    fn a_peer_url_that_cannot_be_dialed_says_why() {
        for bad in [
            "http://127.0.0.1/",
            "ftp://127.0.0.1/",
            "https://127.0.0.1/?cost=x",
            "not a url",
        ] {
            assert!(Peer::parse(bad, None).is_err(), "{bad}");
        }
    }
}
