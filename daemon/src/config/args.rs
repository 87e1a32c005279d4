//! moq-relay's command line and `MOQ_*` environment, both generations (0.14's
//! `--server-*`/`--client-*`/`--tls-*`, 0.17's `--listen-*`/`--connect-*`/`--quic-*`/
//! `--runtime-*`), as one table of flags. Each flag names the TOML key it sets, written in
//! its own generation's spelling; the values land in the file's TOML table before the file
//! is type-checked, so a flag is validated, printed and reported exactly as the key is.
//!
//! Precedence, as both releases: flag > environment > file > default (clap reads the
//! variable when the flag is absent). clap refuses an unknown flag by name.

use std::ffi::OsString;

use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Command};

/// How a flag's text becomes a TOML value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    /// Repeatable, and comma-separated in one value or in the variable.
    List,
    /// `--flag`, `--flag=true`, `--flag=false` (the `=` is required, as in moq-relay).
    Bool,
    Integer,
    /// `--auth-public`: one value is a string (0.14 prefix or 0.17 pattern), more a list.
    TextOrList,
}

struct Flag {
    name: &'static str,
    /// The `MOQ_*` variable; `""` derives it (`MOQ_` + the name upper-cased, `-` → `_`).
    env: &'static str,
    /// Dotted TOML key, in the spelling of the generation the flag belongs to.
    key: &'static str,
    kind: Kind,
}

const fn flag(name: &'static str, key: &'static str, kind: Kind) -> Flag {
    Flag {
        name,
        env: "",
        key,
        kind,
    }
}

const fn flag_env(name: &'static str, env: &'static str, key: &'static str, kind: Kind) -> Flag {
    Flag {
        name,
        env,
        key,
        kind,
    }
}

use Kind::{Bool, Integer, List, Text, TextOrList};

/// Every flag both releases document (`config.md` 3, `moq-relay-0.17.md` 1.2), in the
/// order `--help` lists them. 0.14's exceptions to the env naming rule are spelled out.
const FLAGS: &[Flag] = &[
    flag("log-level", "log.level", Text),
    flag("drain-timeout", "drain_timeout", Text),
    flag("drain-refuse-new", "drain_refuse_new", Bool),
    // ---- 0.14 `[server]`
    flag("server-bind", "server.bind", Text),
    flag("server-backend", "server.backend", Text),
    flag("server-version", "server.version", List),
    flag("server-tcp-bind", "server.tcp.bind", Text),
    flag("server-unix-bind", "server.unix.bind", Text),
    flag_env("tls-cert", "MOQ_SERVER_TLS_CERT", "server.tls.cert", List),
    flag_env("tls-key", "MOQ_SERVER_TLS_KEY", "server.tls.key", List),
    flag_env(
        "tls-generate",
        "MOQ_SERVER_TLS_GENERATE",
        "server.tls.generate",
        List,
    ),
    flag("server-tls-root", "server.tls.root", List),
    flag(
        "server-quic-max-streams",
        "server.quic.max_streams",
        Integer,
    ),
    flag_env(
        "server-max-streams",
        "MOQ_SERVER_QUIC_MAX_STREAMS",
        "server.quic.max_streams",
        Integer,
    ),
    flag("server-quic-gso", "server.quic.gso", Bool),
    flag("server-quic-idle-timeout", "server.quic.idle_timeout", Text),
    flag("server-quic-keep-alive", "server.quic.keep_alive", Text),
    flag(
        "server-quic-mtu-discovery",
        "server.quic.mtu_discovery",
        Bool,
    ),
    flag(
        "server-quic-congestion-control",
        "server.quic.congestion_control",
        Text,
    ),
    flag("server-quic-qlog", "server.quic.qlog", Text),
    flag("server-quic-lb-id", "server.quic.quic_lb_id", Text),
    flag("server-quic-lb-nonce", "server.quic.quic_lb_nonce", Integer),
    // ---- 0.14 `[client]`
    flag("client-connect", "client.connect", Text),
    flag("client-bind", "client.bind", Text),
    flag("client-backend", "client.backend", Text),
    flag("client-failover-delay", "client.failover_delay", Text),
    flag("client-resolution-delay", "client.resolution_delay", Text),
    flag("client-connect-timeout", "client.timeout", Text),
    flag("client-version", "client.version", List),
    flag("client-tls-root", "client.tls.root", List),
    flag("client-tls-system-roots", "client.tls.system_roots", Bool),
    flag("client-tls-fingerprint", "client.tls.fingerprint", List),
    flag("client-tls-cert", "client.tls.cert", Text),
    flag("client-tls-key", "client.tls.key", Text),
    flag(
        "client-tls-disable-verify",
        "client.tls.disable_verify",
        Bool,
    ),
    flag("client-tls-host-name", "client.tls.host_name", Text),
    flag(
        "client-quic-max-streams",
        "client.quic.max_streams",
        Integer,
    ),
    flag("client-quic-idle-timeout", "client.quic.idle_timeout", Text),
    flag("client-quic-keep-alive", "client.quic.keep_alive", Text),
    flag("backoff-initial", "client.backoff.initial", Text),
    flag("backoff-multiplier", "client.backoff.multiplier", Integer),
    flag("backoff-max", "client.backoff.max", Text),
    flag("backoff-timeout", "client.backoff.timeout", Text),
    flag_env(
        "websocket-enabled",
        "MOQ_CLIENT_WEBSOCKET_ENABLED",
        "client.websocket.enabled",
        Bool,
    ),
    flag_env(
        "websocket-delay",
        "MOQ_CLIENT_WEBSOCKET_DELAY",
        "client.websocket.delay",
        Text,
    ),
    // ---- 0.17 `[listen]` (`--listen` was also 0.14's alias of `--server-bind`)
    flag("listen", "listen.bind", Text),
    flag("listen-version", "listen.version", List),
    flag("listen-tcp-bind", "listen.tcp.bind", Text),
    flag("listen-unix-bind", "listen.unix.bind", Text),
    flag("listen-tls-cert", "listen.tls.cert", List),
    flag("listen-tls-key", "listen.tls.key", List),
    flag("listen-tls-generate", "listen.tls.generate", List),
    flag("listen-tls-root", "listen.tls.root", List),
    flag("listen-timeout", "listen.timeout", Text),
    flag("listen-preferred-v4", "listen.preferred_v4", Text),
    flag("listen-preferred-v6", "listen.preferred_v6", Text),
    flag("listen-quic-lb-id", "listen.lb_id", Text),
    flag("listen-quic-lb-nonce", "listen.lb_nonce", Integer),
    // ---- 0.17 `[connect]`
    flag("connect", "connect.url", Text),
    flag("connect-bind", "connect.bind", Text),
    flag("connect-race", "connect.race", Text),
    flag("connect-resolution-delay", "connect.resolution_delay", Text),
    flag("connect-timeout", "connect.timeout", Text),
    flag("connect-version", "connect.version", List),
    flag("connect-once", "connect.once", Bool),
    flag("connect-tls-root", "connect.tls.root", List),
    flag("connect-tls-system-roots", "connect.tls.system_roots", Bool),
    flag("connect-tls-fingerprint", "connect.tls.fingerprint", List),
    flag("connect-tls-cert", "connect.tls.cert", Text),
    flag("connect-tls-key", "connect.tls.key", Text),
    flag("connect-tls-insecure", "connect.tls.insecure", Bool),
    flag("connect-tls-host-name", "connect.tls.host_name", Text),
    flag(
        "connect-websocket-enabled",
        "connect.websocket.enabled",
        Bool,
    ),
    flag("connect-websocket-delay", "connect.websocket.delay", Text),
    flag("goaway-redirect", "connect.goaway.redirect", Text),
    flag("goaway-handover", "connect.goaway.handover", Text),
    // ---- 0.17 `[quic]` (both directions) and `[runtime]`
    flag("quic-max-streams", "quic.max_streams", Integer),
    flag("quic-gso", "quic.gso", Bool),
    flag("quic-idle-timeout", "quic.idle_timeout", Text),
    flag("quic-keep-alive", "quic.keep_alive", Text),
    flag("quic-mtu-discovery", "quic.mtu_discovery", Bool),
    flag("quic-congestion-control", "quic.congestion_control", Text),
    flag("quic-qlog", "quic.qlog", Text),
    flag("quic-receive-window", "quic.receive_window", Text),
    flag(
        "quic-stream-receive-window",
        "quic.stream_receive_window",
        Text,
    ),
    flag("quic-send-window", "quic.send_window", Text),
    flag("runtime-workers", "runtime.workers", Integer),
    flag("runtime-pin", "runtime.pin", Bool),
    flag("runtime-io-uring", "runtime.io_uring", Bool),
    // ---- `[auth]`
    flag("auth-url", "auth.url", Text),
    flag("auth-key", "auth.key", Text),
    flag("auth-key-dir", "auth.key_dir", Text),
    flag("auth-public", "auth.public", TextOrList),
    flag("auth-public-subscribe", "auth.public_subscribe", List),
    flag("auth-public-publish", "auth.public_publish", List),
    flag("auth-domain", "auth.domains", List),
    flag("auth-api", "auth.auth_api", Text),
    flag("auth-mtls-tier", "auth.mtls_tier", Text),
    // ---- `[cluster]`
    flag("cluster-id", "cluster.id", Integer),
    flag("cluster-connect", "cluster.connect", List),
    flag("cluster-connect-api", "cluster.connect_api", Text),
    flag("cluster-node", "cluster.node", Text),
    flag("cluster-mesh", "cluster.mesh", Bool),
    flag("cluster-token", "cluster.token", Text),
    flag("cluster-tier", "cluster.tier", Text),
    flag("cluster-linger", "cluster.linger", Text),
    flag("cluster-max-hops", "cluster.max_hops", Integer),
    // ---- `[web]`, `[internal]`, `[stats]`, `[cache]`, `[iroh]`
    flag("web-ws", "web.ws", Bool),
    flag("web-http-listen", "web.http.listen", Text),
    flag("web-https-listen", "web.https.listen", Text),
    flag("web-https-cert", "web.https.cert", List),
    flag("web-https-key", "web.https.key", List),
    flag("web-https-root", "web.https.root", List),
    flag("internal-listen", "internal.listen", Text),
    flag("stats-enabled", "stats.enabled", Bool),
    flag("stats-prefix", "stats.prefix", Text),
    flag("stats-interval", "stats.interval", Integer),
    flag("stats-node", "stats.node", Text),
    flag("stats-depth", "stats.depth", Integer),
    flag("stats-linger", "stats.linger", Text),
    flag("cache-capacity", "cache.capacity", Text),
    flag("cache-headroom", "cache.headroom", Text),
    flag("cache-duration", "cache.duration", Text),
    flag("iroh-enabled", "iroh.enabled", Bool),
    flag("iroh-secret", "iroh.secret", Text),
    flag("iroh-bind-v4", "iroh.bind_v4", Text),
    flag("iroh-bind-v6", "iroh.bind_v6", Text),
    flag("iroh-disable-relay", "iroh.disable_relay", Bool),
];

/// Names one key may go by: the two generations' table names, and the serde aliases
/// inside them. A flag that sets one spelling replaces whichever the file used.
const ALIASES: &[&[&str]] = &[
    &["server", "listen"],
    &["client", "connect"],
    &["bind", "listen"],
    &["connect", "url"],
    &["failover_delay", "race"],
    &["disable_verify", "insecure"],
];

/// One value a flag or variable set.
#[derive(Debug, Clone, PartialEq)]
pub struct Override {
    /// Dotted key as the flag spells it.
    pub key: &'static str,
    pub value: toml::Value,
    /// `--flag` or `MOQ_VAR`, for messages.
    pub origin: String,
}

/// The parsed command line.
#[derive(Debug, Clone, Default)]
pub struct Args {
    pub config: Option<std::path::PathBuf>,
    pub check: bool,
    pub print_config: bool,
    pub overrides: Vec<Override>,
}

fn env_name(flag: &Flag) -> String {
    if flag.env.is_empty() {
        format!("MOQ_{}", flag.name.to_uppercase().replace('-', "_"))
    } else {
        flag.env.to_owned()
    }
}

fn command() -> Command {
    let mut command = Command::new("moq-relayd")
        .version(env!("CARGO_PKG_VERSION"))
        .about("Media over QUIC relay: thread-per-core, a drop-in for moq-relay.")
        .arg(
            Arg::new("config")
                .value_name("CONFIG")
                .value_parser(clap::value_parser!(std::path::PathBuf))
                .conflicts_with("file")
                .help(
                    "relay.toml to run with. Without one (and no flags), serve on \
                     127.0.0.1:4443 with a generated certificate and anonymous access",
                ),
        )
        .arg(
            Arg::new("file")
                .long("file")
                .value_name("CONFIG")
                .value_parser(clap::value_parser!(std::path::PathBuf))
                .help("The same as CONFIG (moq-relay 0.14's packaged unit passes --file)"),
        )
        .arg(
            Arg::new("check")
                .long("check")
                .action(ArgAction::SetTrue)
                .conflicts_with("print-config")
                .help("Validate the configuration and exit: 0 when usable, 2 when not"),
        )
        .arg(
            Arg::new("print-config")
                .long("print-config")
                .action(ArgAction::SetTrue)
                .help("Print the effective configuration (defaults filled in) and exit"),
        );
    for flag in FLAGS {
        let mut arg = Arg::new(flag.name)
            .long(flag.name)
            .env(env_name(flag))
            .help(format!("sets `{}`", flag.key));
        arg = match flag.kind {
            Kind::Text | Kind::Integer => arg.action(ArgAction::Set),
            Kind::List | Kind::TextOrList => arg.action(ArgAction::Append).value_delimiter(','),
            Kind::Bool => arg
                .action(ArgAction::Set)
                .num_args(0..=1)
                .require_equals(true)
                .default_missing_value("true")
                .value_parser(clap::value_parser!(bool)),
        };
        command = command.arg(arg);
    }
    command
}

/// Parses `args` (the first is the program name) with the process environment.
pub fn parse(
    args: impl IntoIterator<Item = impl Into<OsString> + Clone>,
) -> Result<Args, clap::Error> {
    let matches = command().try_get_matches_from(args)?;
    let mut overrides = Vec::new();
    for flag in FLAGS {
        if let Some(value) = value_of(&matches, flag)? {
            let origin = match matches.value_source(flag.name) {
                Some(ValueSource::EnvVariable) => env_name(flag),
                _ => format!("--{}", flag.name),
            };
            overrides.push(Override {
                key: flag.key,
                value,
                origin,
            });
        }
    }
    Ok(Args {
        config: matches
            .get_one::<std::path::PathBuf>("config")
            .or(matches.get_one("file"))
            .cloned(),
        check: matches.get_flag("check"),
        print_config: matches.get_flag("print-config"),
        overrides,
    })
}

fn value_of(matches: &ArgMatches, flag: &Flag) -> Result<Option<toml::Value>, clap::Error> {
    if !matches!(
        matches.value_source(flag.name),
        Some(ValueSource::CommandLine | ValueSource::EnvVariable)
    ) {
        return Ok(None);
    }
    let invalid = |text: &str, what: &str| {
        clap::Error::raw(
            clap::error::ErrorKind::ValueValidation,
            format!(
                "invalid value '{text}' for '--{}' ({}): {what}\n",
                flag.name,
                env_name(flag)
            ),
        )
    };
    let texts = || -> Vec<String> {
        matches
            .get_many::<String>(flag.name)
            .map(|values| values.cloned().collect())
            .unwrap_or_default()
    };
    Ok(Some(match flag.kind {
        Kind::Bool => {
            toml::Value::Boolean(matches.get_one::<bool>(flag.name).copied().unwrap_or(true))
        }
        Kind::Text => toml::Value::String(texts().pop().unwrap_or_default()),
        Kind::Integer => {
            let text = texts().pop().unwrap_or_default();
            let number = text
                .trim()
                .parse::<i64>()
                .map_err(|_| invalid(&text, "expected an integer"))?;
            toml::Value::Integer(number)
        }
        Kind::List => toml::Value::Array(texts().into_iter().map(toml::Value::String).collect()),
        Kind::TextOrList => {
            let mut values = texts();
            if values.len() == 1 {
                toml::Value::String(values.remove(0))
            } else {
                toml::Value::Array(values.into_iter().map(toml::Value::String).collect())
            }
        }
    }))
}

/// Writes `overrides` into `table`, each at the spelling `table` already uses for it.
pub fn apply(table: &mut toml::Table, overrides: &[Override]) -> Result<(), String> {
    for o in overrides {
        let segments: Vec<&str> = o.key.split('.').collect();
        set(table, &segments, o.value.clone())
            .map_err(|why| format!("{} (`{}`): {why}", o.origin, o.key))?;
    }
    Ok(())
}

fn aliases_of(name: &str) -> &'static [&'static str] {
    ALIASES
        .iter()
        .find(|group| group.contains(&name))
        .copied()
        .unwrap_or(&[])
}

fn set(table: &mut toml::Table, segments: &[&str], value: toml::Value) -> Result<(), String> {
    let (&first, rest) = segments.split_first().ok_or("an empty key")?;
    let spelled = aliases_of(first)
        .iter()
        .find(|alias| table.contains_key(**alias))
        .copied()
        .unwrap_or(first);
    if rest.is_empty() {
        for alias in aliases_of(first) {
            table.remove(*alias);
        }
        table.insert(first.to_owned(), value);
        return Ok(());
    }
    let entry = table
        .entry(spelled.to_owned())
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    match entry {
        toml::Value::Table(inner) => set(inner, rest, value),
        _ => Err(format!("the file sets `{spelled}` to a value, not a table")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> toml::Table {
        text.parse().unwrap()
    }

    fn with(text: &str, args: &[&str]) -> toml::Table {
        let parsed = parse(std::iter::once("moq-relayd").chain(args.iter().copied())).unwrap();
        let mut t = table(text);
        apply(&mut t, &parsed.overrides).unwrap();
        t
    }

    #[test]
    fn a_flag_takes_the_spelling_the_file_uses() {
        let t = with(
            "[listen]\nbind = \"[::]:443\"\n",
            &["--server-bind", "127.0.0.1:1"],
        );
        assert_eq!(t, table("[listen]\nbind = \"127.0.0.1:1\"\n"));
        let t = with(
            "[server]\nlisten = \"[::]:443\"\n",
            &["--listen=127.0.0.1:2"],
        );
        assert_eq!(t, table("[server]\nbind = \"127.0.0.1:2\"\n"));
        let t = with("", &["--connect-tls-insecure"]);
        assert_eq!(t, table("[connect.tls]\ninsecure = true\n"));
    }

    #[test]
    fn lists_split_on_commas_and_repeat() {
        let t = with("", &["--tls-generate", "a,b", "--tls-generate", "c"]);
        assert_eq!(t, table("[server.tls]\ngenerate = [\"a\", \"b\", \"c\"]\n"));
        let t = with("", &["--auth-public", "anon"]);
        assert_eq!(t, table("[auth]\npublic = \"anon\"\n"));
    }

    #[test]
    fn booleans_need_an_equals_sign_and_integers_digits() {
        let t = with("", &["--runtime-pin=false", "--stats-enabled"]);
        assert_eq!(
            t,
            table("[runtime]\npin = false\n[stats]\nenabled = true\n")
        );
        let err = parse(["moq-relayd", "--runtime-workers", "two"]).unwrap_err();
        assert!(err.to_string().contains("--runtime-workers"), "{err}");
        // Without `=` the value is not the flag's: here it is read as the CONFIG path.
        let spaced = parse(["moq-relayd", "--runtime-pin", "false"]).unwrap();
        assert_eq!(
            spaced.config.as_deref(),
            Some(std::path::Path::new("false"))
        );
        assert_eq!(spaced.overrides[0].value, toml::Value::Boolean(true));
    }

    #[test]
    fn an_unknown_flag_is_named() {
        let err = parse(["moq-relayd", "--server-bnd", "x"]).unwrap_err();
        assert!(err.to_string().contains("--server-bnd"), "{err}");
    }

    #[test]
    fn every_flag_is_unique_and_every_key_is_a_dotted_toml_key() {
        let mut names: Vec<&str> = FLAGS.iter().map(|f| f.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), FLAGS.len());
        for f in FLAGS {
            assert!(
                f.key
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '_'),
                "{}",
                f.key
            );
        }
    }
}
