//! How clients and load balancers address this relay's QUIC connections: QUIC-LB
//! connection IDs and `preferred_address`, each spelled three ways across moq-relay's
//! releases (0.14 `[server.quic] quic_lb_id`, 0.17 `[listen] load_balancer`, 0.17's
//! `--listen-quic-lb-*` flags as `[listen] lb_id`). One setting read from whichever
//! spelling set it; two spellings that disagree are an error naming both.

use std::net::{SocketAddrV4, SocketAddrV6};

use super::types::Config;

/// moq-relay's default QUIC-LB nonce length.
pub const DEFAULT_LB_NONCE: usize = 8;

/// A QUIC-LB server ID and nonce length, not yet checked against QUIC-LB's bounds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadBalancer {
    pub server_id: Vec<u8>,
    pub nonce: usize,
}

/// A value that cannot be used, with the dotted key that set it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressingError {
    pub key: String,
    pub message: String,
}

fn error<T>(key: &str, message: impl Into<String>) -> Result<T, AddressingError> {
    Err(AddressingError {
        key: key.to_owned(),
        message: message.into(),
    })
}

impl Config {
    /// QUIC-LB, if any spelling sets it.
    pub fn load_balancer(&self) -> Result<Option<LoadBalancer>, AddressingError> {
        let table = self.server.load_balancer.as_ref();
        let spellings = [
            (
                "listen.load_balancer.id",
                table.and_then(|t| t.id.as_deref()),
                "listen.load_balancer.nonce",
                table.and_then(|t| t.nonce),
            ),
            (
                "listen.lb_id",
                self.server.lb_id.as_deref(),
                "listen.lb_nonce",
                self.server.lb_nonce,
            ),
            (
                "server.quic.quic_lb_id",
                self.server.quic.quic_lb_id.as_deref(),
                "server.quic.quic_lb_nonce",
                self.server.quic.quic_lb_nonce,
            ),
        ];
        let mut chosen: Option<(&str, LoadBalancer)> = None;
        for (id_key, id, nonce_key, nonce) in spellings {
            let Some(id) = id else {
                if nonce.is_some() {
                    return error(nonce_key, format!("needs `{id_key}` beside it"));
                }
                continue;
            };
            let Ok(server_id) = hex::decode(id.trim()) else {
                return error(id_key, format!("{id:?} is not a hex string"));
            };
            let this = LoadBalancer {
                server_id,
                nonce: nonce.map_or(DEFAULT_LB_NONCE, usize::from),
            };
            if let Some((first, other)) = &chosen {
                if *other != this {
                    return error(id_key, format!("disagrees with `{first}`; set one of them"));
                }
            } else {
                if let Err(err) = quic_io::CidLayout::quic_lb(&this.server_id, this.nonce) {
                    let key = match err {
                        quic_io::LoadBalancerError::NonceTooShort(_) => nonce_key,
                        _ => id_key,
                    };
                    return error(key, err.to_string());
                }
                chosen = Some((id_key, this));
            }
        }
        Ok(chosen.map(|(_, lb)| lb))
    }

    /// The QUIC preferred addresses, from `[listen]` or 0.14's `[server.quic]`.
    pub fn preferred_addresses(
        &self,
    ) -> Result<(Option<SocketAddrV4>, Option<SocketAddrV6>), AddressingError> {
        let v4 = one_address::<SocketAddrV4>(
            ("listen.preferred_v4", self.server.preferred_v4.as_deref()),
            (
                "server.quic.preferred_v4",
                self.server.quic.preferred_v4.as_deref(),
            ),
            "an IPv4 address with a port, e.g. 203.0.113.1:443",
        )?;
        let v6 = one_address::<SocketAddrV6>(
            ("listen.preferred_v6", self.server.preferred_v6.as_deref()),
            (
                "server.quic.preferred_v6",
                self.server.quic.preferred_v6.as_deref(),
            ),
            "an IPv6 address in brackets with a port, e.g. [2001:db8::1]:443",
        )?;
        Ok((v4, v6))
    }
}

fn one_address<A: std::str::FromStr + PartialEq>(
    new: (&str, Option<&str>),
    old: (&str, Option<&str>),
    expected: &str,
) -> Result<Option<A>, AddressingError> {
    let parse = |(key, value): (&str, Option<&str>)| -> Result<Option<A>, AddressingError> {
        match value {
            None => Ok(None),
            Some(text) => match text.trim().parse::<A>() {
                Ok(address) => Ok(Some(address)),
                Err(_) => error(key, format!("{text:?} is not {expected}")),
            },
        }
    };
    match (parse(new)?, parse(old)?) {
        (Some(a), Some(b)) if a != b => error(
            old.0,
            format!("disagrees with `{}`; set one of them", new.0),
        ),
        (a, b) => Ok(a.or(b)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The file's values, before validation (which would stop at the first error).
    fn parse(text: &str) -> Result<Config, toml::de::Error> {
        toml::from_str(text)
    }

    #[test]
    fn each_generation_spells_quic_lb_its_own_way_and_they_must_agree() {
        let lb = |text: &str| parse(text).unwrap().load_balancer();
        let expected = Some(LoadBalancer {
            server_id: vec![0x0a, 0xbc],
            nonce: 6,
        });
        assert_eq!(
            lb("[listen]\nload_balancer = { id = \"0abc\", nonce = 6 }\n").unwrap(),
            expected
        );
        assert_eq!(
            lb("[listen]\nlb_id = \"0abc\"\nlb_nonce = 6\n").unwrap(),
            expected
        );
        assert_eq!(
            lb("[server.quic]\nquic_lb_id = \"0abc\"\nquic_lb_nonce = 6\n").unwrap(),
            expected
        );
        assert_eq!(
            lb("[listen]\nload_balancer = { id = \"0a\" }\n")
                .unwrap()
                .map(|lb| lb.nonce),
            Some(DEFAULT_LB_NONCE)
        );
        assert_eq!(lb("[listen]\nbind = \"[::]:443\"\n").unwrap(), None);
        let err = lb("[listen]\nload_balancer = { id = \"0a\" }\nlb_id = \"0b\"\n").unwrap_err();
        assert_eq!(err.key, "listen.lb_id");
        assert!(err.message.contains("listen.load_balancer.id"), "{err:?}");
        let err = lb("[listen]\nlb_id = \"xyz\"\n").unwrap_err();
        assert_eq!(err.key, "listen.lb_id");
        let err = lb("[server.quic]\nquic_lb_id = \"0a\"\nquic_lb_nonce = 3\n").unwrap_err();
        assert_eq!(err.key, "server.quic.quic_lb_nonce");
        let err = lb("[listen]\nlb_nonce = 5\n").unwrap_err();
        assert_eq!(err.key, "listen.lb_nonce");
        let err = lb("[listen]\nlb_id = \"00112233445566778899aabb\"\n").unwrap_err();
        assert!(err.message.contains("exceeds"), "{err:?}");
    }

    #[test]
    fn preferred_addresses_parse_per_family_and_both_generations_must_agree() {
        let preferred = |text: &str| parse(text).unwrap().preferred_addresses();
        let (v4, v6) = preferred(
            "[listen]\npreferred_v4 = \"192.0.2.1:443\"\npreferred_v6 = \"[2001:db8::1]:443\"\n",
        )
        .unwrap();
        assert_eq!(v4, Some("192.0.2.1:443".parse().unwrap()));
        assert_eq!(v6, Some("[2001:db8::1]:443".parse().unwrap()));
        let (v4, _) = preferred("[server.quic]\npreferred_v4 = \"192.0.2.2:4443\"\n").unwrap();
        assert_eq!(v4, Some("192.0.2.2:4443".parse().unwrap()));
        let err = preferred("[listen]\npreferred_v4 = \"[2001:db8::1]:443\"\n").unwrap_err();
        assert_eq!(err.key, "listen.preferred_v4");
        let err = preferred(
            "[server]\npreferred_v6 = \"[::1]:1\"\n[server.quic]\npreferred_v6 = \"[::1]:2\"\n",
        )
        .unwrap_err();
        assert_eq!(err.key, "server.quic.preferred_v6");
    }
}
