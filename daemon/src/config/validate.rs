//! The rules a well-typed configuration must still satisfy before the daemon may start:
//! files that must exist, keys that exclude each other, numbers inside the range the
//! code and the kernel accept, CPUs the process may actually run on. Each failure names
//! the dotted key it is about.

use std::net::SocketAddr;
use std::path::Path;

use super::types::*;

/// Facts about the machine the configuration is checked against, so tests can check a
/// configuration against a host with a chosen CPU set.
#[derive(Debug, Clone)]
pub struct HostFacts {
    /// CPUs in this process's affinity mask, ascending.
    pub allowed_cpus: Vec<usize>,
}

impl HostFacts {
    pub fn of_this_process() -> Self {
        Self {
            allowed_cpus: allowed_cpus(),
        }
    }
}

/// The CPUs this process may run on (the workers pin from the same set). If the kernel
/// will not say, CPU 0 alone, so any larger worker count fails validation loudly.
pub fn allowed_cpus() -> Vec<usize> {
    let cpus = quic_io::allowed_cpus();
    if cpus.is_empty() { vec![0] } else { cpus }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Invalid {
    pub key: String,
    pub message: String,
}

fn invalid<T>(key: &str, message: impl Into<String>) -> Result<T, Invalid> {
    Err(Invalid {
        key: key.to_owned(),
        message: message.into(),
    })
}

/// Protocol version names moq-relay accepts in `version` lists.
const KNOWN_VERSIONS: &[&str] = &[
    "moq-lite-01",
    "moq-lite-02",
    "moq-lite-03",
    "moq-lite-04",
    "moq-lite-05",
    "moq-lite-06",
    // Accepted for moq-relay config compatibility; never offered (the published clients
    // do not know it, spec 12.1), so a list of only this offers nothing.
    "moq-lite-06-wip",
    "moq-transport-14",
    "moq-transport-15",
    "moq-transport-16",
    "moq-transport-17",
    "moq-transport-18",
    "moq-transport-19",
];

/// Bounds on our own knobs: wide enough for any real deployment, narrow enough that a
/// typo (an extra zero or three) is caught at start rather than as an OOM later.
const MAX_WORKERS: usize = 1024;
const SOCKET_BUFFER_RANGE: (u64, u64) = (64 << 10, 1 << 30);
const MAX_STREAMS_RANGE: (u64, u64) = (1, 1 << 20);
const MAX_CONNECTIONS_PER_WORKER: usize = 1 << 20;
const MIN_QUEUE_BYTES: u64 = 64 << 10;
const MAX_QUEUE_BYTES: u64 = 1 << 34;
const MAX_IDLE_TIMEOUT_SECS: u64 = 3600;
/// Flow-control windows: one full-size packet at least (smaller stalls every stream), and
/// at most 1 GiB, which one connection could then make the relay buffer.
const WINDOW_RANGE: (u64, u64) = (1200, 1 << 30);
/// moq-relay's origin ids are QUIC varints.
const MAX_CLUSTER_ID: u64 = 1 << 62;

pub(crate) fn validate(config: &Config, host: &HostFacts) -> Result<(), Invalid> {
    validate_runtime(&config.runtime, host)?;
    validate_socket(&config.socket)?;
    match (config.runtime.io_uring, config.socket.io) {
        (Some(true), IoBackend::Poll) | (Some(false), IoBackend::Uring) => {
            return invalid(
                "runtime.io_uring",
                format!(
                    "{} contradicts [socket] io = {:?}; set one of them",
                    config.runtime.io_uring.unwrap_or_default(),
                    config.socket.io
                ),
            );
        }
        _ => {}
    }
    validate_quic(config)?;
    validate_limits(&config.limits)?;
    validate_server(&config.server)?;
    if config.auth.generation == Generation::V017
        && !config.server.tls.root.is_empty()
        && config.auth.url.is_none()
    {
        // 0.17 grants a certificate nothing by itself: it reports it to the auth server
        // (`[auth] url`), and with no server it refuses to start. 0.14 granted it full
        // access; keep that reading to files that say they are 0.14.
        return invalid(
            "listen.tls.root",
            "a client certificate admits nothing on its own in moq-relay 0.17: set `[auth] url` \
             (the auth server is told of each certificate), or write a 0.14-style file \
             (`[server]`), where a verified certificate gets full access under its path",
        );
    }
    validate_client(&config.client)?;
    validate_auth(&config.auth)?;
    validate_cluster(&config.cluster)?;
    validate_web(config)?;
    validate_misc(config)?;
    Ok(())
}

fn cpu_list(cpus: &[usize]) -> String {
    cpus.iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

fn validate_runtime(runtime: &RuntimeConfig, host: &HostFacts) -> Result<(), Invalid> {
    let allowed = &host.allowed_cpus;
    for (index, cpu) in runtime.cpus.iter().enumerate() {
        if !allowed.contains(cpu) {
            return invalid(
                "runtime.cpus",
                format!(
                    "CPU {cpu} is not in this process's CPU affinity set ({})",
                    cpu_list(allowed)
                ),
            );
        }
        if runtime.cpus[..index].contains(cpu) {
            return invalid("runtime.cpus", format!("CPU {cpu} is listed twice"));
        }
    }
    let usable = if runtime.cpus.is_empty() {
        allowed.len()
    } else {
        runtime.cpus.len()
    };
    if let Workers::Count(count) = runtime.workers {
        if count > MAX_WORKERS {
            return invalid(
                "runtime.workers",
                format!("{count} workers is more than the limit of {MAX_WORKERS}"),
            );
        }
        if count > usable {
            let whence = if runtime.cpus.is_empty() {
                "this process may run on"
            } else {
                "`runtime.cpus` lists"
            };
            return invalid(
                "runtime.workers",
                format!(
                    "{count} workers need {count} CPUs, but {whence} only {usable} ({})",
                    cpu_list(if runtime.cpus.is_empty() {
                        allowed
                    } else {
                        &runtime.cpus
                    })
                ),
            );
        }
    }
    if let Some(cpu) = runtime.upstream_cpu
        && !allowed.contains(&cpu)
    {
        return invalid(
            "runtime.upstream_cpu",
            format!(
                "CPU {cpu} is not in this process's CPU affinity set ({})",
                cpu_list(allowed)
            ),
        );
    }
    Ok(())
}

fn validate_socket(socket: &SocketConfig) -> Result<(), Invalid> {
    let (low, high) = SOCKET_BUFFER_RANGE;
    for (key, value) in [
        ("socket.recv_buffer", socket.recv_buffer),
        ("socket.send_buffer", socket.send_buffer),
    ] {
        if !(low..=high).contains(&value.0) {
            return invalid(key, format!("{} bytes is outside {low}..={high}", value.0));
        }
    }
    if !(1..=MAX_GSO_SEGMENTS).contains(&socket.max_gso_segments) {
        return invalid(
            "socket.max_gso_segments",
            format!(
                "{} is outside 1..={MAX_GSO_SEGMENTS} (the kernel refuses larger GSO sends)",
                socket.max_gso_segments
            ),
        );
    }
    Ok(())
}

fn validate_quic(config: &Config) -> Result<(), Invalid> {
    for (key, streams) in [
        ("quic.max_streams", config.quic.max_streams),
        ("server.quic.max_streams", config.server.quic.max_streams),
    ] {
        let (low, high) = MAX_STREAMS_RANGE;
        if let Some(streams) = streams.filter(|n| !(low..=high).contains(n)) {
            return invalid(key, format!("{streams} is outside {low}..={high}"));
        }
    }
    for (key, timeout) in [
        ("quic.idle_timeout", config.quic.idle_timeout),
        ("server.quic.idle_timeout", config.server.quic.idle_timeout),
    ] {
        if let Some(timeout) = timeout
            && (timeout.is_zero() || timeout.as_secs() > MAX_IDLE_TIMEOUT_SECS)
        {
            return invalid(
                key,
                format!("must be between 1ms and {MAX_IDLE_TIMEOUT_SECS}s"),
            );
        }
    }
    let quic = config.effective_quic();
    if quic
        .keep_alive
        .is_some_and(|keep_alive| keep_alive >= quic.idle_timeout)
    {
        let key = if config.quic.keep_alive.is_some() {
            "quic.keep_alive"
        } else {
            "server.quic.keep_alive"
        };
        return invalid(
            key,
            "must be shorter than the idle timeout, or the connection times out between pings",
        );
    }
    for (key, window) in [
        ("quic.receive_window", config.quic.receive_window),
        (
            "quic.stream_receive_window",
            config.quic.stream_receive_window,
        ),
        ("quic.send_window", config.quic.send_window),
    ] {
        let (low, high) = WINDOW_RANGE;
        if let Some(window) = window.filter(|w| !(low..=high).contains(&w.0)) {
            return invalid(key, format!("{} bytes is outside {low}..={high}", window.0));
        }
    }
    if let Some(timeout) = config.server.timeout
        && timeout.as_secs() > MAX_IDLE_TIMEOUT_SECS
    {
        return invalid(
            "server.timeout",
            format!(
                "must be at most {MAX_IDLE_TIMEOUT_SECS}s (0 waits as long as the connection lives)"
            ),
        );
    }
    for checked in [
        config.load_balancer().map(drop),
        config.preferred_addresses().map(drop),
    ] {
        if let Err(err) = checked {
            return invalid(&err.key, err.message);
        }
    }
    Ok(())
}

fn validate_limits(limits: &LimitsConfig) -> Result<(), Invalid> {
    if !(1..=MAX_CONNECTIONS_PER_WORKER).contains(&limits.connections_per_worker) {
        return invalid(
            "limits.connections_per_worker",
            format!(
                "{} is outside 1..={MAX_CONNECTIONS_PER_WORKER}",
                limits.connections_per_worker
            ),
        );
    }
    if limits.sessions_total > MAX_CONNECTIONS_PER_WORKER * MAX_WORKERS {
        return invalid(
            "limits.sessions_total",
            format!(
                "{} is more than {} (0: no limit beyond the per-worker one)",
                limits.sessions_total,
                MAX_CONNECTIONS_PER_WORKER * MAX_WORKERS
            ),
        );
    }
    for (key, value, max) in [
        (
            "limits.subscriptions_per_session",
            limits.subscriptions_per_session,
            proto::session::MAX_OUTSTANDING_REQUESTS,
        ),
        (
            "limits.announces_per_session",
            limits.announces_per_session,
            proto::session::MAX_BROADCASTS,
        ),
    ] {
        if !(1..=max).contains(&value) {
            return invalid(
                key,
                format!("{value} is outside 1..={max} (the session's own bound)"),
            );
        }
    }
    if limits.handshakes_per_second == 0 {
        return invalid(
            "limits.handshakes_per_second",
            "0 would refuse every handshake; give a rate of at least 1",
        );
    }
    let most_buffered = (driver::DEFAULT_MAX_PENDING_BYTES / 2) as u64;
    if !(MIN_QUEUE_BYTES..=most_buffered).contains(&limits.bytes_buffered_per_session.0) {
        return invalid(
            "limits.bytes_buffered_per_session",
            format!(
                "{} bytes is outside {MIN_QUEUE_BYTES}..={most_buffered} (half the hard bound \
                 past which a stream is reset, so frames still fit above it)",
                limits.bytes_buffered_per_session.0
            ),
        );
    }
    for (key, value) in [
        ("limits.cache_bytes_per_track", limits.cache_bytes_per_track),
        (
            "limits.bytes_in_flight_per_subscriber",
            limits.bytes_in_flight_per_subscriber,
        ),
    ] {
        if !(MIN_QUEUE_BYTES..=MAX_QUEUE_BYTES).contains(&value.0) {
            return invalid(
                key,
                format!(
                    "{} bytes is outside {MIN_QUEUE_BYTES}..={MAX_QUEUE_BYTES}",
                    value.0
                ),
            );
        }
    }
    Ok(())
}

/// `host:port` where host is an address or a name (resolved at bind time).
fn check_bind_address(key: &str, value: &str) -> Result<(), Invalid> {
    if value.parse::<SocketAddr>().is_ok() {
        return Ok(());
    }
    match value.rsplit_once(':') {
        Some((host, port))
            if !host.is_empty()
                && !host.contains(['[', ']', ' '])
                && port.parse::<u16>().is_ok() =>
        {
            Ok(())
        }
        _ => invalid(
            key,
            format!(
                "`{value}` is not an address with a port, like \"[::]:443\" or \"relay.example:443\""
            ),
        ),
    }
}

fn check_readable_file(key: &str, path: &str) -> Result<(), Invalid> {
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() => std::fs::File::open(path)
            .map(drop)
            .or_else(|err| invalid(key, format!("cannot read `{path}`: {err}"))),
        Ok(_) => invalid(key, format!("`{path}` is not a file")),
        Err(err) => invalid(key, format!("cannot read `{path}`: {err}")),
    }
}

fn check_versions(key: &str, versions: &Strings) -> Result<(), Invalid> {
    for version in versions.iter() {
        if !KNOWN_VERSIONS.contains(&version) {
            return invalid(
                key,
                format!(
                    "unknown protocol version `{version}`; known: {}",
                    KNOWN_VERSIONS.join(", ")
                ),
            );
        }
    }
    Ok(())
}

fn validate_server(server: &ServerConfig) -> Result<(), Invalid> {
    if let Some(bind) = &server.bind {
        check_bind_address("server.bind", bind)?;
    }
    check_versions("server.version", &server.version)?;
    if let Some(bind) = &server.tcp.bind {
        check_bind_address("server.tcp.bind", bind)?;
    }
    let tls = &server.tls;
    if tls.cert.len() != tls.key.len() {
        return invalid(
            "server.tls.key",
            format!(
                "{} key file(s) for {} certificate file(s); they pair by position",
                tls.key.len(),
                tls.cert.len()
            ),
        );
    }
    for path in tls.cert.iter() {
        check_readable_file("server.tls.cert", path)?;
    }
    for path in tls.key.iter() {
        check_readable_file("server.tls.key", path)?;
    }
    for path in tls.root.iter() {
        check_readable_file("server.tls.root", path)?;
    }
    if tls.generate.iter().any(str::is_empty) {
        return invalid("server.tls.generate", "host names must not be empty");
    }
    if quic_enabled(server) && tls.cert.is_empty() && tls.generate.is_empty() {
        return invalid(
            "server.tls",
            "QUIC needs a certificate: set `cert` and `key`, or `generate = [\"host.name\"]` for a self-signed one",
        );
    }
    Ok(())
}

/// moq-relay starts no QUIC listener when only stream listeners are configured.
pub fn quic_enabled(server: &ServerConfig) -> bool {
    server.bind.is_some() || (server.tcp.bind.is_none() && server.unix.bind.is_none())
}

fn validate_client(client: &ClientConfig) -> Result<(), Invalid> {
    check_versions("client.version", &client.version)?;
    let tls = &client.tls;
    if !tls.fingerprint.is_empty() && (!tls.root.is_empty() || tls.system_roots == Some(true)) {
        return invalid(
            "client.tls.fingerprint",
            "pinned fingerprints cannot be combined with `root` or `system_roots`",
        );
    }
    if tls.disable_verify == Some(true)
        && (!tls.root.is_empty() || !tls.fingerprint.is_empty() || tls.system_roots == Some(true))
    {
        return invalid(
            "client.tls.disable_verify",
            "verification is disabled, so the trust settings beside it would be ignored",
        );
    }
    match (&tls.cert, &tls.key) {
        (Some(_), None) => return invalid("client.tls.key", "a client certificate needs its key"),
        (None, Some(_)) => return invalid("client.tls.cert", "a client key needs its certificate"),
        _ => {}
    }
    for fingerprint in tls.fingerprint.iter() {
        let hex = fingerprint.replace(':', "");
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return invalid(
                "client.tls.fingerprint",
                format!("`{fingerprint}` is not a hex SHA-256 (64 hex digits)"),
            );
        }
    }
    Ok(())
}

fn is_url(value: &str) -> bool {
    value
        .split_once("://")
        .is_some_and(|(scheme, rest)| !scheme.is_empty() && !rest.is_empty())
}

fn validate_auth(auth: &AuthConfig) -> Result<(), Invalid> {
    if let Some(url) = &auth.url {
        // 0.17: the auth server is the one decider (moq-relay-0.17.md 2.2).
        let other = [
            ("key", auth.key.is_some()),
            ("key_dir", auth.key_dir.is_some()),
            ("public", auth.public.is_some()),
            ("public_subscribe", !auth.public_subscribe.is_empty()),
            ("public_publish", !auth.public_publish.is_empty()),
            ("auth_api", auth.auth_api.is_some()),
            ("domains", !auth.domains.is_empty()),
            ("mtls_tier", auth.mtls_tier.is_some()),
        ];
        if let Some((name, _)) = other.iter().find(|(_, set)| *set) {
            return invalid(
                "auth.url",
                format!(
                    "the auth server decides every session, so `{name}` cannot be set beside `url`"
                ),
            );
        }
        if let Err(reason) = crate::decider::check_url("url", url) {
            return invalid("auth.url", reason);
        }
    }
    if let Some(url) = &auth.auth_api
        && let Err(reason) = crate::decider::check_url("auth_api", url)
    {
        return invalid("auth.auth_api", reason);
    }
    if auth.key.is_some() && auth.key_dir.is_some() {
        return invalid("auth.key_dir", "`key` and `key_dir` exclude each other");
    }
    if auth.auth_api.is_some() {
        let other = [
            ("key", auth.key.is_some()),
            ("key_dir", auth.key_dir.is_some()),
            ("public", auth.public.is_some()),
        ];
        if let Some((name, _)) = other.iter().find(|(_, set)| *set) {
            return invalid(
                "auth.auth_api",
                format!("`auth_api` decides every connection, so `{name}` cannot be set beside it"),
            );
        }
    }
    if let Some(key) = auth.key.as_deref().filter(|key| !is_url(key)) {
        check_readable_file("auth.key", key)?;
    }
    if let Some(dir) = auth.key_dir.as_deref().filter(|dir| !is_url(dir))
        && !Path::new(dir).is_dir()
    {
        return invalid("auth.key_dir", format!("`{dir}` is not a directory"));
    }
    validate_public(auth)?;
    if auth.domains.iter().any(str::is_empty) {
        return invalid("auth.domains", "domain suffixes must not be empty");
    }
    Ok(())
}

/// Every anonymous grant must read the same in the generation the file is written for
/// (spec 0.17 2.4): a value with `*` is a 0.17 pattern and must parse as one, and in a
/// file that names no generation it is refused, since 0.14 would read it literally.
fn validate_public(auth: &AuthConfig) -> Result<(), Invalid> {
    let generation = auth.generation;
    let mut lists: Vec<(&str, &Strings, Generation)> = Vec::new();
    if let Some(public) = &auth.public {
        if public.subscribe == public.publish {
            lists.push(("auth.public", &public.subscribe, generation));
        } else {
            lists.push(("auth.public.subscribe", &public.subscribe, generation));
            lists.push(("auth.public.publish", &public.publish, generation));
        }
    }
    // 0.17-only keys: patterns wherever they are read (a 0.14 file ignores them).
    if generation != Generation::V014 {
        lists.push((
            "auth.public_subscribe",
            &auth.public_subscribe,
            Generation::V017,
        ));
        lists.push((
            "auth.public_publish",
            &auth.public_publish,
            Generation::V017,
        ));
    }
    for (key, values, generation) in lists {
        if values.len() > crate::auth::MAX_GRANTS {
            return invalid(
                key,
                format!("more than {} entries", crate::auth::MAX_GRANTS),
            );
        }
        for value in values.iter() {
            if let Err(err) = crate::auth::Grant::from_config(value, generation) {
                return invalid(key, err.to_string());
            }
        }
    }
    Ok(())
}

fn validate_cluster(cluster: &ClusterConfig) -> Result<(), Invalid> {
    if let Some(id) = cluster.id
        && (id == 0 || id >= MAX_CLUSTER_ID)
    {
        return invalid("cluster.id", format!("{id} is outside 1..2^62"));
    }
    if let Some(hops) = cluster.max_hops
        && !(1..=32).contains(&hops)
    {
        return invalid("cluster.max_hops", format!("{hops} is outside 1..=32"));
    }
    for entry in cluster.connect.iter() {
        let peer = entry.url();
        if let crate::config::PeerEntry::Object(object) = entry {
            let query = peer.split_once('?').map_or("", |(_, query)| query);
            if query
                .split('&')
                .any(|pair| pair.starts_with("cost=") || pair.starts_with("jwt="))
            {
                return invalid(
                    "cluster.connect",
                    format!(
                        "`{}`: a peer object carries `cost` and `token` itself, not in its URL",
                        redact_query(peer)
                    ),
                );
            }
            if object.egress.is_some() && object.egress != object.cost {
                return invalid(
                    "cluster.connect",
                    format!(
                        "`{}`: `egress` must equal `cost` (asymmetric prices are refused, as in moq-relay 0.17)",
                        redact_query(peer)
                    ),
                );
            }
        }
        if !is_url(peer) {
            return invalid(
                "cluster.connect",
                format!("`{peer}` is not a URL like \"https://relay.example:443/\""),
            );
        }
        let query = peer.split_once('?').map_or("", |(_, query)| query);
        for pair in query.split('&') {
            if let Some(cost) = pair.strip_prefix("cost=")
                && cost.parse::<u64>().is_err()
            {
                return invalid(
                    "cluster.connect",
                    format!("`cost={cost}` in `{peer}` is not a whole number"),
                );
            }
        }
    }
    match &cluster.mesh {
        Some(Mesh::Enabled(true)) if cluster.node.is_none() => invalid(
            "cluster.mesh",
            "mesh discovery needs `cluster.node`, the address other relays reach this one at",
        ),
        Some(Mesh::LegacyNode(url)) if cluster.node.as_ref().is_some_and(|node| node != url) => {
            invalid(
                "cluster.mesh",
                "the legacy `mesh` URL disagrees with `cluster.node`",
            )
        }
        _ => Ok(()),
    }
}

/// A URL without its query, which may hold a token, for messages.
fn redact_query(url: &str) -> &str {
    url.split('?').next().unwrap_or_default()
}

fn validate_web(config: &Config) -> Result<(), Invalid> {
    if let Some(listen) = &config.web.http.listen {
        check_bind_address("web.http.listen", listen)?;
    }
    let https = &config.web.https;
    if let Some(listen) = &https.listen {
        check_bind_address("web.https.listen", listen)?;
        if https.cert.is_empty() {
            return invalid(
                "web.https.cert",
                "`web.https.listen` needs a certificate and key",
            );
        }
    }
    if https.cert.len() != https.key.len() {
        return invalid(
            "web.https.key",
            format!(
                "{} key file(s) for {} certificate file(s)",
                https.key.len(),
                https.cert.len()
            ),
        );
    }
    for path in https.cert.iter() {
        check_readable_file("web.https.cert", path)?;
    }
    for path in https.key.iter() {
        check_readable_file("web.https.key", path)?;
    }
    if let Some(listen) = &config.internal.listen {
        check_bind_address("internal.listen", listen)?;
    }
    Ok(())
}

fn validate_misc(config: &Config) -> Result<(), Invalid> {
    if config.stats.interval == 0 {
        return invalid("stats.interval", "must be at least 1 second");
    }
    if config.stats.enabled && proto::path::normalize(&config.stats.prefix).is_empty() {
        // moq-stats would then exclude every path from the counts as its own.
        return invalid(
            "stats.prefix",
            "must name a path (the default is \".stats\")",
        );
    }
    for (key, value) in [
        ("cache.capacity", &config.cache.capacity),
        ("cache.headroom", &config.cache.headroom),
    ] {
        if let Some(value) = value {
            check_cache_size(key, value)?;
        }
    }
    Ok(())
}

/// `"8GiB"`, `"512MB"`, a byte count, or `"NN%"` of memory with NN in (0, 100].
fn check_cache_size(key: &str, value: &toml::Value) -> Result<(), Invalid> {
    match value {
        toml::Value::Integer(bytes) if *bytes > 0 => Ok(()),
        toml::Value::String(text) => {
            if let Some(percent) = text.strip_suffix('%') {
                match percent.trim().parse::<f64>() {
                    Ok(p) if p > 0.0 && p <= 100.0 => Ok(()),
                    _ => invalid(key, format!("`{text}`: a percentage must be in (0, 100]")),
                }
            } else if text
                .parse::<bytesize::ByteSize>()
                .is_ok_and(|size| size.as_u64() > 0)
            {
                Ok(())
            } else {
                invalid(
                    key,
                    format!("`{text}` is not a size like \"512MiB\" or \"25%\""),
                )
            }
        }
        _ => invalid(
            key,
            "expected a size like \"512MiB\", a byte count, or \"25%\"",
        ),
    }
}
