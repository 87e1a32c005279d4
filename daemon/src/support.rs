//! Which configuration keys this build acts on. A key that parses but whose feature is
//! not built yet is logged once at start, never silently dropped.

/// Dotted key prefixes the daemon implements. A set key matching none of these is
/// reported as "not yet supported".
const SUPPORTED: &[&str] = &[
    "file",
    "log.level",
    "server.bind",
    "server.listen",
    "listen.bind",
    "listen.listen",
    "server.version",
    "server.tls.cert",
    "server.tls.key",
    "server.tls.generate",
    "server.tls.root",
    "listen.version",
    "listen.tls.cert",
    "listen.tls.key",
    "listen.tls.generate",
    "server.quic.max_streams",
    "server.quic.gso",
    "server.quic.idle_timeout",
    "server.quic.keep_alive",
    "server.quic.congestion_control",
    "server.timeout",
    "listen.timeout",
    "server.preferred_v4",
    "server.preferred_v6",
    "listen.preferred_v4",
    "listen.preferred_v6",
    "server.quic.preferred_v4",
    "server.quic.preferred_v6",
    "server.load_balancer.",
    "listen.load_balancer.",
    "server.lb_id",
    "server.lb_nonce",
    "listen.lb_id",
    "listen.lb_nonce",
    "server.quic.quic_lb_id",
    "server.quic.quic_lb_nonce",
    "quic.receive_window",
    "quic.stream_receive_window",
    "quic.send_window",
    "auth.public",
    "auth.public_subscribe",
    "auth.public_publish",
    "auth.key",
    "auth.key_dir",
    "auth.url",
    "auth.auth_api",
    "listen.tls.root",
    // The auth deciders' HTTPS client reads these (cluster links will too).
    "client.tls.root",
    "client.tls.fingerprint",
    "connect.tls.fingerprint",
    "client.tls.system_roots",
    "client.tls.cert",
    "client.tls.key",
    "client.tls.disable_verify",
    "connect.tls.root",
    "connect.tls.system_roots",
    "connect.tls.cert",
    "connect.tls.key",
    "connect.tls.disable_verify",
    "cluster.id",
    "cluster.linger",
    "cluster.connect",
    "cluster.max_hops",
    "cluster.token",
    "cluster.connect_api",
    "cluster.mesh",
    "cluster.node",
    "runtime.workers",
    "runtime.pin",
    "runtime.cpus",
    "runtime.io_uring",
    "runtime.upstream_cpu",
    "socket.",
    "quic.congestion",
    "quic.idle_timeout",
    "quic.max_streams",
    "quic.keep_alive",
    "quic.gso",
    "quic.congestion_control",
    "limits.",
    "drain_timeout",
    "drain_refuse_new",
    "web.http.listen",
    "web.https.listen",
    "web.https.cert",
    "web.https.key",
    "internal.listen",
    "stats.",
];

pub fn is_supported(key: &str) -> bool {
    SUPPORTED
        .iter()
        .any(|prefix| key == *prefix || (prefix.ends_with('.') && key.starts_with(prefix)))
}

/// The set keys this build does not act on yet.
pub fn unsupported(keys_set: &[String]) -> impl Iterator<Item = &str> {
    keys_set
        .iter()
        .map(String::as_str)
        .filter(|key| !is_supported(key))
}
