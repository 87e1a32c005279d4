//! The typed form of `relay.toml`. Every table rejects unknown keys except `[auth]`
//! (moq-relay ignores unknown auth keys; we keep them and warn). Defaults live here,
//! next to the field they belong to, so `--print-config` shows exactly what runs.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// The whole file. Table aliases accept the `dev` branch spellings of moq-relay
/// (`[listen]` for `[server]`, `[connect]` for `[client]`).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// moq-relay has a top-level `file` key (the positional argument's field); it is
    /// accepted and ignored when read from a file.
    #[serde(skip_serializing)]
    pub file: Option<String>,
    /// Time given to sessions to move away after GOAWAY before the process exits.
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub drain_timeout: Option<Duration>,
    /// moq-relayd's own: refuse new QUIC handshakes once a drain starts. moq-relay 0.17
    /// keeps accepting (and sends each newcomer a GOAWAY), which is the default; refusing
    /// suits a load balancer that moves clients only when a node stops answering.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drain_refuse_new: Option<bool>,
    pub log: LogConfig,
    #[serde(alias = "listen")]
    pub server: ServerConfig,
    #[serde(alias = "connect")]
    pub client: ClientConfig,
    pub auth: AuthConfig,
    pub cluster: ClusterConfig,
    pub web: WebConfig,
    pub internal: InternalConfig,
    pub stats: StatsConfig,
    pub cache: CacheConfig,
    pub iroh: IrohConfig,
    pub runtime: RuntimeConfig,
    pub socket: SocketConfig,
    pub quic: QuicConfig,
    pub limits: LimitsConfig,
}

// ---------------------------------------------------------------------------------------
// [log]

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    pub level: LogLevel,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Trace,
    Debug,
    #[default]
    Info,
    Warn,
    Error,
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

// ---------------------------------------------------------------------------------------
// [server]

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// UDP address for QUIC, `host:port` or a socket address. moq-relay's default is
    /// `[::]:443`; see `effective_bind`.
    #[serde(alias = "listen", skip_serializing_if = "Option::is_none")]
    pub bind: Option<String>,
    /// QUIC implementation. Only `quinn` exists here (we drive quinn-proto ourselves).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend: Option<QuicBackend>,
    /// Restrict the protocol versions offered; empty means all we implement.
    #[serde(skip_serializing_if = "Strings::is_empty")]
    pub version: Strings,
    pub tls: ServerTlsConfig,
    pub quic: ServerQuicConfig,
    pub tcp: TcpListenConfig,
    pub unix: UnixListenConfig,
    /// 0.17 `[listen] timeout`: deadline for the handshake plus the MoQ SETUP.
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// 0.17 `[listen] preferred_v4` / `preferred_v6` (QUIC preferred_address).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preferred_v4: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preferred_v6: Option<String>,
    /// 0.17 `[listen] load_balancer = { id, nonce }` (QUIC-LB; see `Config::load_balancer`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<LoadBalancerConfig>,
    /// Where 0.17's `--listen-quic-lb-id` / `--listen-quic-lb-nonce` land.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lb_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lb_nonce: Option<u8>,
}

/// `[listen] load_balancer`: the QUIC-LB server ID in hex and the nonce length.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoadBalancerConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nonce: Option<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum QuicBackend {
    Quinn,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerTlsConfig {
    /// PEM certificate chains, paired by index with `key`.
    #[serde(skip_serializing_if = "Strings::is_empty")]
    pub cert: Strings,
    #[serde(skip_serializing_if = "Strings::is_empty")]
    pub key: Strings,
    /// Host names for a generated self-signed certificate.
    #[serde(skip_serializing_if = "Strings::is_empty")]
    pub generate: Strings,
    /// CAs for optional client certificates (mTLS).
    #[serde(skip_serializing_if = "Strings::is_empty")]
    pub root: Strings,
}

/// moq-relay's per-role QUIC knobs (`[server.quic]`). Our `[quic]` table carries the
/// same keys and wins where both set one.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerQuicConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_streams: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gso: Option<bool>,
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<Duration>,
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub keep_alive: Option<Duration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mtu_discovery: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub congestion_control: Option<CongestionFamily>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qlog: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preferred_v4: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preferred_v6: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quic_lb_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quic_lb_nonce: Option<u8>,
}

/// moq-relay's `congestion_control` values: a family, not an algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CongestionFamily {
    Loss,
    Delay,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TcpListenConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bind: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct UnixListenConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bind: Option<PathBuf>,
    pub allow: UnixAllowConfig,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct UnixAllowConfig {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub uid: Vec<u32>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub gid: Vec<u32>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pid: Vec<u32>,
}

// ---------------------------------------------------------------------------------------
// [client]

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClientConfig {
    #[serde(alias = "url", skip_serializing_if = "Option::is_none")]
    pub connect: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend: Option<QuicBackend>,
    #[serde(
        alias = "race",
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub failover_delay: Option<Duration>,
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub resolution_delay: Option<Duration>,
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    #[serde(skip_serializing_if = "Strings::is_empty")]
    pub version: Strings,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub once: Option<bool>,
    pub tls: ClientTlsConfig,
    pub quic: ServerQuicConfig,
    pub backoff: BackoffConfig,
    pub websocket: WebSocketClientConfig,
    /// `dev` branch GOAWAY handling; kept so such files parse.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub goaway: BTreeMap<String, toml::Value>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClientTlsConfig {
    #[serde(skip_serializing_if = "Strings::is_empty")]
    pub root: Strings,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system_roots: Option<bool>,
    #[serde(skip_serializing_if = "Strings::is_empty")]
    pub fingerprint: Strings,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
    #[serde(alias = "insecure", skip_serializing_if = "Option::is_none")]
    pub disable_verify: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_name: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackoffConfig {
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub initial: Option<Duration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub multiplier: Option<u32>,
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub max: Option<Duration>,
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebSocketClientConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub delay: Option<Duration>,
}

// ---------------------------------------------------------------------------------------
// [auth]

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct AuthConfig {
    /// 0.17: the auth server asked on every connect (one JSON POST per event).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// One verifying JWK file (or URL).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// A directory (or URL) of `{kid}.jwk` files.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_dir: Option<String>,
    /// Anonymous access. `None` means no anonymous access at all.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public: Option<PublicAccess>,
    #[serde(skip_serializing_if = "Strings::is_empty")]
    pub domains: Strings,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_api: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mtls_tier: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<AuthTlsConfig>,
    /// moq-relay 0.17's per-direction anonymous patterns (0.14 ignores these keys).
    #[serde(skip_serializing_if = "Strings::is_empty")]
    pub public_subscribe: Strings,
    #[serde(skip_serializing_if = "Strings::is_empty")]
    pub public_publish: Strings,
    /// Which moq-relay the file was written for; set by the loader from the tables the
    /// file uses, never read from `[auth]` itself.
    #[serde(skip)]
    pub generation: Generation,
    /// moq-relay ignores unknown `[auth]` keys; we keep them only to warn about them.
    #[serde(flatten, skip_serializing)]
    pub unknown: BTreeMap<String, toml::Value>,
}

/// The moq-relay release a configuration file was written for. The two read `public`
/// differently (prefixes in 0.14, path patterns in 0.17) and close refused sessions with
/// different codes, so the auth module follows the file's generation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Generation {
    /// Nothing in the file tells: values that mean the same in both are read as such,
    /// and a value that would not is refused by validation.
    #[default]
    Unknown,
    /// moq-relay 0.14: the file uses `[server]`.
    V014,
    /// moq-relay 0.17: the file uses `[listen]`, or `[auth] public_subscribe` /
    /// `public_publish` without `[server]`.
    V017,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthTlsConfig {
    #[serde(skip_serializing_if = "Strings::is_empty")]
    pub root: Strings,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disable_verify: Option<bool>,
}

/// `public = "prefix"`, `public = ["a", "b"]` (both directions), or a table with separate
/// `subscribe` and `publish` prefixes. The empty string is the root: everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PublicAccess {
    #[serde(skip_serializing_if = "Strings::is_empty")]
    pub subscribe: Strings,
    #[serde(skip_serializing_if = "Strings::is_empty")]
    pub publish: Strings,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api: Option<String>,
}

impl<'de> Deserialize<'de> for PublicAccess {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PublicVisitor;

        impl<'de> Visitor<'de> for PublicVisitor {
            type Value = PublicAccess;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a path prefix, a list of prefixes, or a table with `subscribe`, `publish` and `api`")
            }

            fn visit_str<E: de::Error>(self, prefix: &str) -> Result<PublicAccess, E> {
                let both = Strings(vec![prefix.to_owned()]);
                Ok(PublicAccess {
                    subscribe: both.clone(),
                    publish: both,
                    api: None,
                })
            }

            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<PublicAccess, A::Error> {
                let both = Strings::deserialize(de::value::SeqAccessDeserializer::new(seq))?;
                Ok(PublicAccess {
                    subscribe: both.clone(),
                    publish: both,
                    api: None,
                })
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<PublicAccess, A::Error> {
                #[derive(Deserialize)]
                #[serde(default, deny_unknown_fields)]
                #[derive(Default)]
                struct Table {
                    subscribe: Strings,
                    publish: Strings,
                    api: Option<String>,
                }
                let table = Table::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(PublicAccess {
                    subscribe: table.subscribe,
                    publish: table.publish,
                    api: table.api,
                })
            }
        }

        deserializer.deserialize_any(PublicVisitor)
    }
}

// ---------------------------------------------------------------------------------------
// [cluster]

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// Origin (hop) id; random per start when unset, like moq-relay.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    /// 0.17: the longest hop chain an announcement may carry (1..=32).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_hops: Option<u32>,
    /// Peer relays to dial: URLs (both generations) or 0.17's peer objects.
    #[serde(skip_serializing_if = "PeerEntries::is_empty")]
    pub connect: PeerEntries,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connect_api: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mesh: Option<Mesh>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
    /// Grace period after an abrupt publisher loss before its broadcast ends.
    #[serde(with = "humantime_serde")]
    pub linger: Duration,
    /// `dev` branch mDNS discovery; kept so such files parse.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub lan: BTreeMap<String, toml::Value>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            id: None,
            max_hops: None,
            connect: PeerEntries::default(),
            connect_api: None,
            node: None,
            mesh: None,
            token: None,
            tier: None,
            linger: Duration::from_secs(5),
            lan: BTreeMap::new(),
        }
    }
}

/// `[cluster] connect`: one URL, or a list of URLs and 0.17 peer objects.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct PeerEntries(pub Vec<PeerEntry>);

impl PeerEntries {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &PeerEntry> {
        self.0.iter()
    }
}

/// One peer to dial.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum PeerEntry {
    /// `https://relay.example/?jwt=…&cost=2` (both generations).
    Url(String),
    /// 0.17: `{ url, cost, egress, token }`.
    Object(PeerObject),
}

impl PeerEntry {
    pub fn url(&self) -> &str {
        match self {
            PeerEntry::Url(url) => url,
            PeerEntry::Object(object) => &object.url,
        }
    }
}

/// moq-relay 0.17's peer object: the URL without `cost=`/`jwt=`, which these carry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PeerObject {
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<u64>,
    /// Must equal `cost` (0.17 refuses asymmetric prices).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<u64>,
    /// As an inline `?jwt=`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

impl<'de> Deserialize<'de> for PeerEntries {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum OneOrMany {
            One(String),
            Many(Vec<PeerEntry>),
        }
        // A peer list of thousands is a mistake, not a mesh.
        const MAX_PEERS: usize = 1024;
        match OneOrMany::deserialize(deserializer)? {
            OneOrMany::One(url) => Ok(PeerEntries(vec![PeerEntry::Url(url)])),
            OneOrMany::Many(peers) if peers.len() > MAX_PEERS => {
                Err(de::Error::custom(format!("more than {MAX_PEERS} peers")))
            }
            OneOrMany::Many(peers) => Ok(PeerEntries(peers)),
        }
    }
}

/// `mesh = true|false`, or a legacy URL string that also names this node.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum Mesh {
    Enabled(bool),
    LegacyNode(String),
}

impl Mesh {
    pub fn is_enabled(&self) -> bool {
        matches!(self, Mesh::Enabled(true) | Mesh::LegacyNode(_))
    }
}

// ---------------------------------------------------------------------------------------
// [web], [internal], [stats], [cache], [iroh]

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebConfig {
    /// Serve the WebSocket (qmux) fallback.
    pub ws: bool,
    pub http: WebHttpConfig,
    pub https: WebHttpsConfig,
}

impl Default for WebConfig {
    fn default() -> Self {
        Self {
            ws: true,
            http: WebHttpConfig::default(),
            https: WebHttpsConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebHttpConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebHttpsConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    #[serde(skip_serializing_if = "Strings::is_empty")]
    pub cert: Strings,
    #[serde(skip_serializing_if = "Strings::is_empty")]
    pub key: Strings,
    #[serde(skip_serializing_if = "Strings::is_empty")]
    pub root: Strings,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct InternalConfig {
    /// Unauthenticated ops listener (`/health`, `/metrics`, `/nodes`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct StatsConfig {
    pub enabled: bool,
    pub prefix: String,
    /// Snapshot period in whole seconds (moq-relay's unit), at least 1.
    pub interval: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    pub depth: u32,
    /// 0.17: how long a bucket's stats broadcast outlives its last session.
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub linger: Option<Duration>,
}

impl Default for StatsConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            prefix: ".stats".into(),
            interval: 1,
            node: None,
            depth: 0,
            linger: None,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// Target bytes of cached payload: a size (`"512MiB"`, bytes) or `"NN%"` of memory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capacity: Option<toml::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub headroom: Option<toml::Value>,
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub duration: Option<Duration>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct IrohConfig {
    pub enabled: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bind_v4: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bind_v6: Option<String>,
    pub disable_relay: bool,
}

// ---------------------------------------------------------------------------------------
// Our sections: [runtime], [socket], [quic], [limits]

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Worker threads, each with its own socket, io_uring and QUIC endpoint.
    pub workers: Workers,
    /// Pin each worker (and the upstream thread) to one CPU.
    pub pin: bool,
    /// CPUs the workers may be pinned to, in worker order; empty means the process's
    /// whole affinity set.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cpus: Vec<usize>,
    /// CPU for the thread that holds the upstream (cluster) links.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_cpu: Option<usize>,
    /// 0.17 `[runtime] io_uring`: `true` insists on io_uring (`[socket] io = "uring"`),
    /// `false` uses poll(2); unset leaves `[socket] io` to choose. See `effective_io`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub io_uring: Option<bool>,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            workers: Workers::Auto,
            pin: true,
            cpus: Vec::new(),
            upstream_cpu: None,
            io_uring: None,
        }
    }
}

/// `workers = "auto"` (one per allowed CPU) or a count. moq-relay's `dev` branch uses
/// `0` for "shared runtime"; here `0` means the same as `"auto"`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Workers {
    #[default]
    Auto,
    Count(usize),
}

impl<'de> Deserialize<'de> for Workers {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct WorkersVisitor;

        impl Visitor<'_> for WorkersVisitor {
            type Value = Workers;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a worker count or \"auto\"")
            }

            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Workers, E> {
                match usize::try_from(n) {
                    Ok(0) => Ok(Workers::Auto),
                    Ok(n) => Ok(Workers::Count(n)),
                    Err(_) => Err(E::invalid_value(de::Unexpected::Signed(n), &self)),
                }
            }

            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Workers, E> {
                match usize::try_from(n) {
                    Ok(0) => Ok(Workers::Auto),
                    Ok(n) => Ok(Workers::Count(n)),
                    Err(_) => Err(E::invalid_value(de::Unexpected::Unsigned(n), &self)),
                }
            }

            fn visit_str<E: de::Error>(self, s: &str) -> Result<Workers, E> {
                if s == "auto" {
                    Ok(Workers::Auto)
                } else {
                    Err(E::invalid_value(de::Unexpected::Str(s), &self))
                }
            }
        }

        deserializer.deserialize_any(WorkersVisitor)
    }
}

impl Serialize for Workers {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Workers::Auto => serializer.serialize_str("auto"),
            Workers::Count(n) => serializer.serialize_u64(*n as u64),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SocketConfig {
    pub io: IoBackend,
    /// SO_RCVBUF for each worker socket. A QUIC server under load drops datagrams with
    /// the kernel default (208 KiB); see `systemd/99-moq-relayd.conf` for the ceiling.
    pub recv_buffer: ByteCount,
    pub send_buffer: ByteCount,
    /// UDP segmentation offload on send (many datagrams per syscall).
    pub gso: bool,
    /// UDP receive coalescing.
    pub gro: bool,
    /// Datagrams per GSO send; this kernel refuses more than 128.
    pub max_gso_segments: usize,
}

impl Default for SocketConfig {
    fn default() -> Self {
        Self {
            io: IoBackend::Auto,
            recv_buffer: ByteCount(8 << 20),
            send_buffer: ByteCount(8 << 20),
            gso: true,
            gro: true,
            max_gso_segments: 64,
        }
    }
}

/// The kernel's limit on segments in one UDP GSO send (129 gives EINVAL on 6.18).
pub const MAX_GSO_SEGMENTS: usize = 128;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IoBackend {
    /// io_uring when the kernel allows it, otherwise poll(2).
    #[default]
    Auto,
    Uring,
    Poll,
}

/// Transport settings for every QUIC connection. Also accepts the keys of moq-relay's
/// `[server.quic]` (and the `dev` branch's shared `[quic]`); a key set here wins.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct QuicConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub congestion: Option<Congestion>,
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<Duration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_streams: Option<u64>,
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub keep_alive: Option<Duration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gso: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mtu_discovery: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub congestion_control: Option<CongestionFamily>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qlog: Option<PathBuf>,
    /// 0.17's flow-control windows (sizes, as `[limits]` reads them).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub receive_window: Option<ByteCount>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream_receive_window: Option<ByteCount>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub send_window: Option<ByteCount>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Congestion {
    Cubic,
    Bbr,
    NewReno,
}

/// The QUIC settings after merging `[quic]` over `[server.quic]` over the defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EffectiveQuic {
    pub congestion: Congestion,
    pub idle_timeout: Duration,
    pub max_streams: u64,
    pub keep_alive: Option<Duration>,
    pub mtu_discovery: bool,
    /// `[listen] timeout`: QUIC and WebTransport handshake plus the MoQ SETUP; `None`
    /// (a `0` in the file) waits as long as the connection lives.
    pub handshake_timeout: Option<Duration>,
    pub receive_window: u64,
    /// `None`: quinn-proto's default (1.25 MB per stream, 8 of them in flight).
    pub stream_receive_window: Option<u64>,
    pub send_window: Option<u64>,
}

/// moq-relay 0.17's `[listen] timeout` default, for both generations: 0.14 had no
/// deadline, and a connection that never finishes its setup must not be held forever.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// moq-relay 0.17's `[quic] receive_window` default, for both generations: quinn-proto's
/// own is unbounded, and one publisher's connection should not hold more than this
/// unread.
pub const DEFAULT_RECEIVE_WINDOW: u64 = 64 << 20;

/// moq-relay's `dev` default for how long sessions get to leave after GOAWAY.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// moq-relay's default for concurrent streams of each direction.
pub const DEFAULT_MAX_STREAMS: u64 = 10_000;

impl Config {
    pub fn effective_quic(&self) -> EffectiveQuic {
        let ours = &self.quic;
        let theirs = &self.server.quic;
        let family = ours.congestion_control.or(theirs.congestion_control);
        let congestion = ours.congestion.unwrap_or(match family {
            Some(CongestionFamily::Delay) => Congestion::Bbr,
            // CUBIC is quinn-proto's default and its most exercised controller.
            Some(CongestionFamily::Loss) | None => Congestion::Cubic,
        });
        let keep_alive = ours
            .keep_alive
            .or(theirs.keep_alive)
            .unwrap_or(Duration::from_secs(5));
        EffectiveQuic {
            congestion,
            idle_timeout: ours
                .idle_timeout
                .or(theirs.idle_timeout)
                .unwrap_or(Duration::from_secs(30)),
            max_streams: ours
                .max_streams
                .or(theirs.max_streams)
                .unwrap_or(DEFAULT_MAX_STREAMS),
            keep_alive: (!keep_alive.is_zero()).then_some(keep_alive),
            mtu_discovery: ours.mtu_discovery.or(theirs.mtu_discovery).unwrap_or(false),
            handshake_timeout: Some(self.server.timeout.unwrap_or(DEFAULT_HANDSHAKE_TIMEOUT))
                .filter(|timeout| !timeout.is_zero()),
            receive_window: ours.receive_window.map_or(DEFAULT_RECEIVE_WINDOW, |b| b.0),
            stream_receive_window: ours.stream_receive_window.map(|b| b.0),
            send_window: ours.send_window.map(|b| b.0),
        }
    }

    /// The configuration with every default that has one written in, for
    /// `--print-config`: what runs, not only what the file said.
    pub fn filled(&self) -> Config {
        let mut filled = self.clone();
        let quic = self.effective_quic();
        filled.quic.congestion = Some(quic.congestion);
        filled.quic.idle_timeout = Some(quic.idle_timeout);
        filled.quic.max_streams = Some(quic.max_streams);
        filled.quic.keep_alive = Some(quic.keep_alive.unwrap_or(Duration::ZERO));
        filled.quic.mtu_discovery = Some(quic.mtu_discovery);
        filled.quic.receive_window = Some(ByteCount(quic.receive_window));
        filled.server.timeout = Some(quic.handshake_timeout.unwrap_or(Duration::ZERO));
        filled.quic.gso = Some(self.effective_gso());
        filled.socket.io = self.effective_io();
        filled.drain_timeout = Some(self.drain_timeout.unwrap_or(DEFAULT_DRAIN_TIMEOUT));
        filled.drain_refuse_new = Some(self.drain_refuse_new.unwrap_or(false));
        if super::validate::quic_enabled(&self.server) && self.server.bind.is_none() {
            filled.server.bind = Some(crate::listen::DEFAULT_BIND.to_owned());
        }
        filled
    }

    /// The socket backend: `[socket] io`, narrowed by 0.17's `[runtime] io_uring` when
    /// `io` is left at `auto` (validation refuses the two disagreeing).
    pub fn effective_io(&self) -> IoBackend {
        match (self.socket.io, self.runtime.io_uring) {
            (IoBackend::Auto, Some(true)) => IoBackend::Uring,
            (IoBackend::Auto, Some(false)) => IoBackend::Poll,
            (io, _) => io,
        }
    }

    /// GSO is on unless `[socket] gso` or either QUIC table turns it off.
    pub fn effective_gso(&self) -> bool {
        self.socket.gso && self.quic.gso.unwrap_or(true) && self.server.quic.gso.unwrap_or(true)
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Connections one worker accepts before refusing new ones.
    pub connections_per_worker: usize,
    /// Connections the relay accepts, all workers together; 0: only the per-worker limit.
    pub sessions_total: usize,
    /// Connections one source address may hold, all workers together (a NAT's many
    /// viewers share one); 0: no limit.
    pub sessions_per_source: usize,
    /// New handshakes per second per worker: past it, a client must answer a Retry; past
    /// four times it with its address proven, it is refused.
    pub handshakes_per_second: u32,
    /// Subscriptions one session may hold at once; past it a SUBSCRIBE is refused on its
    /// own stream (BoundsExceeded).
    pub subscriptions_per_session: usize,
    /// Broadcasts one session's announcements may make live at once; past it an
    /// announcement is ignored (counted), never the session closed.
    pub announces_per_session: usize,
    /// Cached payload of one track (its newest groups), for late joiners.
    pub cache_bytes_per_track: ByteCount,
    /// Bytes queued toward one subscriber before its oldest groups are dropped.
    pub bytes_in_flight_per_subscriber: ByteCount,
    /// Bytes one session may have waiting on QUIC flow control before the relay stops
    /// handing it more (its subscriptions then drop old groups at their own bound).
    pub bytes_buffered_per_session: ByteCount,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            connections_per_worker: 10_000,
            // Ten workers' worth: a ceiling for a host, above what the tests and
            // benchmarks here open (a few thousand).
            sessions_total: 100_000,
            // One worker's worth: an abuser gets no more than one core's share, while a
            // load generator on one host (1 -> 1000 and beyond) is not refused.
            sessions_per_source: 10_000,
            handshakes_per_second: 1_000,
            subscriptions_per_session: proto::session::MAX_OUTSTANDING_REQUESTS,
            announces_per_session: proto::session::MAX_BROADCASTS,
            cache_bytes_per_track: ByteCount(16 << 20),
            bytes_in_flight_per_subscriber: ByteCount(4 << 20),
            bytes_buffered_per_session: ByteCount(
                crate::relay::MAX_PENDING_BYTES_PER_SESSION as u64,
            ),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Value helpers

/// moq-relay's "string or array" keys. Always printed as an array.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Strings(pub Vec<String>);

impl Strings {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }
}

impl<'de> Deserialize<'de> for Strings {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct StringsVisitor;

        impl<'de> Visitor<'de> for StringsVisitor {
            type Value = Strings;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or an array of strings")
            }

            fn visit_str<E: de::Error>(self, s: &str) -> Result<Strings, E> {
                Ok(Strings(vec![s.to_owned()]))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Strings, A::Error> {
                // A config list of paths or names; thousands would be a mistake, not a need.
                const MAX_ITEMS: usize = 4096;
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<String>()? {
                    if items.len() == MAX_ITEMS {
                        return Err(de::Error::custom(format!("more than {MAX_ITEMS} entries")));
                    }
                    items.push(item);
                }
                Ok(Strings(items))
            }
        }

        deserializer.deserialize_any(StringsVisitor)
    }
}

/// A byte count written as an integer or a size string (`"8MiB"`, `"512 MB"`).
/// Printed as a plain integer so `--print-config` output is exact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct ByteCount(pub u64);

impl<'de> Deserialize<'de> for ByteCount {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let size = bytesize::ByteSize::deserialize(deserializer)?;
        Ok(ByteCount(size.as_u64()))
    }
}
