//! Reading `relay.toml`: parse, type-check, validate, and turn every failure into an
//! error an operator can act on without reading our source: the file, the line and
//! column, the dotted key, and what was expected.

use std::fmt;
use std::path::{Path, PathBuf};

use toml::de::{DeTable, DeValue};

use super::args::{Override, apply};
use super::types::{Config, Generation, PublicAccess, Strings};
use super::validate::{HostFacts, validate};

/// Where the running configuration came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// No file and no flags: localhost, self-signed certificate, anonymous access.
    Embedded,
    /// No file: moq-relay's defaults with flags and `MOQ_*` variables on top.
    Flags,
    File(PathBuf),
}

/// A configuration that passed every check, with the keys the file set (for the
/// "not yet supported" warnings).
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub source: Source,
    pub keys_set: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: Option<PathBuf>,
    /// 1-based line and column of the offending key or value.
    pub position: Option<(usize, usize)>,
    /// Dotted key, e.g. `server.tls.cert`.
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.file {
            Some(file) => write!(f, "{}", file.display())?,
            None => write!(f, "<embedded default>")?,
        }
        if let Some((line, column)) = self.position {
            write!(f, ":{line}:{column}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ": key `{key}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Loads the file (if any) with the command line's flags and variables on top: what
/// the daemon runs. No file and no flags is the embedded default.
pub fn load_with(path: Option<&Path>, overrides: &[Override]) -> Result<Loaded, ConfigError> {
    if overrides.is_empty() {
        return match path {
            Some(path) => load(path),
            None => Ok(load_embedded_default()),
        };
    }
    let text = match path {
        Some(path) => std::fs::read_to_string(path).map_err(|err| ConfigError {
            file: Some(path.to_owned()),
            position: None,
            key: None,
            message: format!("cannot read the configuration file: {err}"),
        })?,
        None => String::new(),
    };
    // A file that does not parse is reported as the file alone would be.
    let mut table: toml::Table = match text.parse() {
        Ok(table) => table,
        Err(_) => return path.map_or_else(|| Ok(load_embedded_default()), load),
    };
    apply(&mut table, overrides).map_err(|message| ConfigError {
        file: path.map(Path::to_owned),
        position: None,
        key: None,
        message,
    })?;
    let merged = toml::to_string(&table).map_err(|err| ConfigError {
        file: path.map(Path::to_owned),
        position: None,
        key: None,
        message: format!("cannot merge the flags into the file: {err}"),
    })?;
    match load_str(&merged, path, &HostFacts::of_this_process()) {
        Ok(mut loaded) => {
            loaded.source = path.map_or(Source::Flags, |p| Source::File(p.to_owned()));
            Ok(loaded)
        }
        Err(mut err) => {
            // Blame the flag that set the key, or the file where it sits.
            let origin = err.key.as_deref().and_then(|key| {
                overrides
                    .iter()
                    .rev()
                    .find(|o| same_key(o.key, key))
                    .map(|o| o.origin.clone())
            });
            match (origin, path) {
                (Some(origin), _) => {
                    err.position = None;
                    err.message = format!("{} (set by {origin})", err.message);
                    Err(err)
                }
                (None, Some(path)) => match load(path) {
                    Err(file_err) => Err(file_err),
                    Ok(_) => {
                        err.position = None;
                        Err(err)
                    }
                },
                (None, None) => {
                    err.position = None;
                    Err(err)
                }
            }
        }
    }
}

/// Whether the dotted keys name one setting, whichever generation spells them.
fn same_key(flag_key: &str, error_key: &str) -> bool {
    let canonical = |key: &str| {
        key.split('.')
            .map(|segment| match segment {
                "listen" => "server",
                "connect" => "client",
                other => other,
            })
            .collect::<Vec<_>>()
            .join(".")
    };
    canonical(flag_key) == canonical(error_key)
}

/// Loads, type-checks and validates a file.
pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|err| ConfigError {
        file: Some(path.to_owned()),
        position: None,
        key: None,
        message: format!("cannot read the configuration file: {err}"),
    })?;
    load_str(&text, Some(path), &HostFacts::of_this_process())
}

/// The configuration used when no file is given.
pub fn load_embedded_default() -> Loaded {
    let mut config = Config::default();
    config.server.bind = Some("127.0.0.1:4443".to_owned());
    config.server.tls.generate = Strings(vec!["localhost".to_owned()]);
    let everything = Strings(vec![String::new()]);
    config.auth.public = Some(PublicAccess {
        subscribe: everything.clone(),
        publish: everything,
        api: None,
    });
    Loaded {
        config,
        source: Source::Embedded,
        keys_set: Vec::new(),
    }
}

pub(crate) fn load_str(
    text: &str,
    file: Option<&Path>,
    host: &HostFacts,
) -> Result<Loaded, ConfigError> {
    let error_at =
        |span: Option<std::ops::Range<usize>>, key: Option<String>, message: String| ConfigError {
            file: file.map(Path::to_owned),
            position: span.map(|span| line_and_column(text, span.start)),
            key,
            message,
        };

    let document =
        DeTable::parse(text).map_err(|err| error_at(err.span(), None, err.message().to_owned()))?;

    let deserializer = toml::Deserializer::parse(text)
        .map_err(|err| error_at(err.span(), None, err.message().to_owned()))?;
    let mut config: Config = serde_path_to_error::deserialize(deserializer).map_err(|err| {
        let key = err.path().to_string();
        let inner = err.into_inner();
        let span = inner.span().or_else(|| locate(document.get_ref(), &key));
        error_at(
            span,
            (key != ".").then_some(key),
            inner.message().to_owned(),
        )
    })?;

    config.auth.generation = generation(document.get_ref());

    validate(&config, host).map_err(|invalid| {
        let span = locate(document.get_ref(), &invalid.key);
        error_at(span, Some(invalid.key), invalid.message)
    })?;

    let mut keys_set = Vec::new();
    collect_keys(document.get_ref(), String::new(), &mut keys_set);
    let source = match file {
        Some(path) => Source::File(path.to_owned()),
        None => Source::Embedded,
    };
    Ok(Loaded {
        config,
        source,
        keys_set,
    })
}

/// Which moq-relay the file was written for. The serde aliases make `[server]` and
/// `[listen]` one table, so only the document still shows which spelling was used.
/// 0.17 refuses to start on `[server]` and 0.14 on nothing it does not know (it ignores
/// unknown `[auth]` keys), so `[listen]`/`[server]` decide; without either, the 0.17-only
/// `[auth] public_subscribe`/`public_publish` keys say 0.17.
fn generation(document: &DeTable<'_>) -> Generation {
    if document.contains_key("listen") {
        return Generation::V017;
    }
    if document.contains_key("server") {
        return Generation::V014;
    }
    let flat_public = document
        .get("auth")
        .and_then(|auth| match auth.get_ref() {
            DeValue::Table(auth) => {
                Some(auth.contains_key("public_subscribe") || auth.contains_key("public_publish"))
            }
            _ => None,
        })
        .unwrap_or(false);
    if flat_public {
        Generation::V017
    } else {
        Generation::Unknown
    }
}

/// The span of a dotted key's value in the document, falling back to the nearest table
/// that exists (a missing key is reported where its table is).
fn locate(table: &DeTable<'_>, dotted: &str) -> Option<std::ops::Range<usize>> {
    let mut current = table;
    let mut found = None;
    for segment in dotted.split('.') {
        let (key, value) = current.get_key_value(segment)?;
        found = Some(key.span());
        match value.get_ref() {
            DeValue::Table(inner) => current = inner,
            _ => return found,
        }
    }
    found
}

/// Every leaf key the document sets, dotted, sorted within each table.
fn collect_keys(table: &DeTable<'_>, prefix: String, out: &mut Vec<String>) {
    for (key, value) in table.iter() {
        let dotted = if prefix.is_empty() {
            key.get_ref().to_string()
        } else {
            format!("{prefix}.{}", key.get_ref())
        };
        match value.get_ref() {
            DeValue::Table(inner) => collect_keys(inner, dotted, out),
            _ => out.push(dotted),
        }
    }
}

fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit('\n')
        .next()
        .map_or(0, |last| last.chars().count())
        + 1;
    (line, column)
}

/// Serialises the configuration back to TOML with every default filled in.
pub fn to_toml(config: &Config) -> Result<String, toml::ser::Error> {
    toml::to_string(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::types::{Congestion, Mesh, Workers};

    fn host(cpus: usize) -> HostFacts {
        HostFacts {
            allowed_cpus: (0..cpus).collect(),
        }
    }

    fn parse(text: &str) -> Result<Config, ConfigError> {
        load_str(text, Some(Path::new("relay.toml")), &host(4)).map(|loaded| loaded.config)
    }

    const TLS: &str = "[server]\ntls.generate = \"localhost\"\n";

    #[test]
    fn cluster_peers_are_urls_or_017_peer_objects_priced_symmetrically() {
        let listen = "[listen]\nbind = \"127.0.0.1:0\"\ntls.generate = \"localhost\"\n";
        let config = parse(&format!(
            "{listen}[cluster]\nconnect = [\"https://a.example/\", {{ url = \"https://b.example/\", cost = 3, egress = 3, token = \"t\" }}]\n"
        ))
        .unwrap();
        let peers: Vec<&str> = config.cluster.connect.iter().map(|p| p.url()).collect();
        assert_eq!(peers, ["https://a.example/", "https://b.example/"]);
        let one = parse(&format!(
            "{listen}[cluster]\nconnect = \"https://a.example/\"\n"
        ))
        .unwrap();
        assert_eq!(one.cluster.connect.len(), 1);
        for (bad, why) in [
            ("{ url = \"https://b.example/?cost=2\" }", "not in its URL"),
            (
                "{ url = \"https://b.example/\", cost = 1, egress = 2 }",
                "must equal",
            ),
            (
                "{ url = \"https://b.example/\", price = 1 }",
                "cluster.connect",
            ),
        ] {
            let err = parse(&format!("{listen}[cluster]\nconnect = [{bad}]\n")).unwrap_err();
            assert!(err.to_string().contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn dotted_keys_and_sub_tables_are_the_same_setting() {
        let dotted = parse("[server]\ntls.generate = [\"a\"]\n").unwrap();
        let table = parse("[server.tls]\ngenerate = [\"a\"]\n").unwrap();
        assert_eq!(dotted.server.tls.generate, table.server.tls.generate);
    }

    #[test]
    fn public_access_accepts_string_list_and_table_forms() {
        let both = parse(&format!("{TLS}[auth]\npublic = \"demo\"\n"))
            .unwrap()
            .auth
            .public
            .unwrap();
        assert_eq!(
            (both.subscribe.0.clone(), both.publish.0.clone()),
            (vec!["demo".to_owned()], vec!["demo".to_owned()])
        );
        let list = parse(&format!("{TLS}[auth]\npublic = [\"a\", \"b\"]\n"))
            .unwrap()
            .auth
            .public
            .unwrap();
        assert_eq!(list.publish.0, vec!["a", "b"]);
        let table = parse(&format!(
            "{TLS}[auth.public]\nsubscribe = [\"anon\", \"demo\"]\npublish = \"anon\"\n"
        ))
        .unwrap();
        let table = table.auth.public.unwrap();
        assert_eq!(table.subscribe.0, vec!["anon", "demo"]);
        assert_eq!(table.publish.0, vec!["anon"]);
    }

    #[test]
    fn our_quic_table_wins_over_moq_relays_and_zero_keep_alive_disables_pings() {
        let config = parse(&format!(
            "{TLS}[server.quic]\nidle_timeout = \"10s\"\nkeep_alive = \"0s\"\ncongestion_control = \"delay\"\n[quic]\nidle_timeout = \"20s\"\ncongestion = \"newreno\"\n"
        ))
        .unwrap();
        let quic = config.effective_quic();
        assert_eq!(quic.idle_timeout, std::time::Duration::from_secs(20));
        assert_eq!(quic.congestion, Congestion::NewReno);
        assert_eq!(quic.keep_alive, None);
    }

    #[test]
    fn workers_accept_auto_count_and_zero_as_auto() {
        assert_eq!(
            parse(&format!("{TLS}[runtime]\nworkers = \"auto\"\n"))
                .unwrap()
                .runtime
                .workers,
            Workers::Auto
        );
        assert_eq!(
            parse(&format!("{TLS}[runtime]\nworkers = 0\n"))
                .unwrap()
                .runtime
                .workers,
            Workers::Auto
        );
        assert_eq!(
            parse(&format!("{TLS}[runtime]\nworkers = 3\n"))
                .unwrap()
                .runtime
                .workers,
            Workers::Count(3)
        );
        let err = parse(&format!("{TLS}[runtime]\nworkers = \"many\"\n")).unwrap_err();
        assert_eq!(err.key.as_deref(), Some("runtime.workers"));
        assert_eq!(err.position, Some((4, 11)));
    }

    #[test]
    fn quic_without_a_certificate_is_refused_at_the_server_tls_key() {
        let err = parse("[server]\nbind = \"127.0.0.1:0\"\n").unwrap_err();
        assert_eq!(err.key.as_deref(), Some("server.tls"));
        let stream_only = parse("[server.tcp]\nbind = \"127.0.0.1:4444\"\n");
        assert!(
            stream_only.is_ok(),
            "no QUIC listener, so no certificate needed: {stream_only:?}"
        );
    }

    #[test]
    fn gso_segments_above_the_kernel_limit_are_refused() {
        let err = parse(&format!("{TLS}[socket]\nmax_gso_segments = 129\n")).unwrap_err();
        assert_eq!(err.key.as_deref(), Some("socket.max_gso_segments"));
        assert_eq!(err.position, Some((4, 1)));
    }

    #[test]
    fn per_session_limits_past_the_sessions_own_bounds_name_their_key() {
        for (line, key) in [
            (
                "subscriptions_per_session = 0",
                "limits.subscriptions_per_session",
            ),
            (
                "subscriptions_per_session = 1025",
                "limits.subscriptions_per_session",
            ),
            (
                "announces_per_session = 16385",
                "limits.announces_per_session",
            ),
            ("sessions_total = 2000000000", "limits.sessions_total"),
            (
                "bytes_buffered_per_session = \"1KiB\"",
                "limits.bytes_buffered_per_session",
            ),
            (
                "bytes_buffered_per_session = \"64MiB\"",
                "limits.bytes_buffered_per_session",
            ),
        ] {
            let err = parse(&format!("{TLS}[limits]\n{line}\n")).unwrap_err();
            assert_eq!(err.key.as_deref(), Some(key), "{line}");
        }
        let ok = parse(&format!(
            "{TLS}[limits]\nsubscriptions_per_session = 1\nannounces_per_session = 16384\nsessions_total = 0\n"
        ));
        assert!(ok.is_ok(), "{ok:?}");
    }

    #[test]
    fn listen_timeout_and_quic_windows_default_as_0_17_and_are_bounded() {
        let defaults = parse(TLS).unwrap().effective_quic();
        assert_eq!(
            defaults.handshake_timeout,
            Some(std::time::Duration::from_secs(10))
        );
        assert_eq!(defaults.receive_window, 64 << 20);
        assert_eq!(defaults.stream_receive_window, None);

        let set = parse(&format!(
            "{TLS}timeout = \"0s\"\n[quic]\nreceive_window = \"8MiB\"\nsend_window = 65536\n"
        ))
        .unwrap()
        .effective_quic();
        assert_eq!(set.handshake_timeout, None, "0 waits for ever");
        assert_eq!(
            (set.receive_window, set.send_window),
            (8 << 20, Some(65536))
        );

        for (text, key) in [
            ("[quic]\nreceive_window = 100\n", "quic.receive_window"),
            (
                "[quic]\nstream_receive_window = \"2GiB\"\n",
                "quic.stream_receive_window",
            ),
            ("timeout = \"2h\"\n", "server.timeout"),
        ] {
            let err = parse(&format!("{TLS}{text}")).unwrap_err();
            assert_eq!(err.key.as_deref(), Some(key), "{text}");
        }
    }

    #[test]
    fn runtime_io_uring_picks_the_socket_backend_and_may_not_contradict_it() {
        use crate::config::types::IoBackend;
        let io = |text: &str| parse(&format!("{TLS}{text}")).map(|c| c.effective_io());
        assert_eq!(io("").unwrap(), IoBackend::Auto);
        assert_eq!(
            io("[runtime]\nio_uring = true\n").unwrap(),
            IoBackend::Uring
        );
        assert_eq!(
            io("[runtime]\nio_uring = false\n").unwrap(),
            IoBackend::Poll
        );
        let both = "[runtime]\nio_uring = true\n[socket]\nio = \"poll\"\n";
        assert_eq!(
            io(both).unwrap_err().key.as_deref(),
            Some("runtime.io_uring")
        );
    }

    #[test]
    fn mesh_needs_a_node_and_accepts_the_legacy_url_form() {
        let err = parse(&format!("{TLS}[cluster]\nmesh = true\n")).unwrap_err();
        assert_eq!(err.key.as_deref(), Some("cluster.mesh"));
        let legacy = parse(&format!("{TLS}[cluster]\nmesh = \"https://me.example/\"\n")).unwrap();
        assert_eq!(
            legacy.cluster.mesh,
            Some(Mesh::LegacyNode("https://me.example/".into()))
        );
    }

    #[test]
    fn cache_capacity_takes_sizes_and_percentages() {
        assert!(parse(&format!("{TLS}[cache]\ncapacity = \"8GiB\"\n")).is_ok());
        assert!(parse(&format!("{TLS}[cache]\ncapacity = \"25%\"\n")).is_ok());
        let err = parse(&format!("{TLS}[cache]\ncapacity = \"150%\"\n")).unwrap_err();
        assert_eq!(err.key.as_deref(), Some("cache.capacity"));
    }

    #[test]
    fn the_generation_follows_listen_or_server_and_ambiguous_public_values_are_refused() {
        let detect = |text: &str| generation(DeTable::parse(text).unwrap().get_ref());
        assert_eq!(detect("[listen]\nbind = \"[::]:443\"\n"), Generation::V017);
        assert_eq!(detect("[server]\nbind = \"[::]:443\"\n"), Generation::V014);
        assert_eq!(
            detect("[auth]\npublic_subscribe = \"**\"\n"),
            Generation::V017
        );
        assert_eq!(detect("[auth]\npublic = \"\"\n"), Generation::Unknown);

        let listen = "[listen]\ntls.generate = \"localhost\"\n";
        let auth = |text: &str| parse(text).map(|config| config.auth);
        let patterns = auth(&format!("{listen}[auth]\npublic = \"anon/**\"\n")).unwrap();
        assert_eq!(patterns.generation, Generation::V017);
        let prefixes = auth(&format!("{TLS}[auth]\npublic = \"anon/**\"\n")).unwrap();
        assert_eq!(prefixes.generation, Generation::V014);

        let err = auth(&format!(
            "{listen}[auth]\npublic_publish = [\"/anon/**\"]\n"
        ))
        .unwrap_err();
        assert_eq!(err.key.as_deref(), Some("auth.public_publish"));
        let err = auth(&format!(
            "{listen}[auth.public]\nsubscribe = \"a/**\"\npublish = \"b/**/**\"\n"
        ))
        .unwrap_err();
        assert_eq!(err.key.as_deref(), Some("auth.public.publish"));

        // Only a file built without `[server]` or `[listen]` (which then has no QUIC
        // certificate) can leave the generation open; validation still refuses `*`.
        let mut config = Config::default();
        config.server.tls.generate = Strings(vec!["localhost".to_owned()]);
        config.auth.public = Some(PublicAccess {
            subscribe: Strings(vec!["anon/**".to_owned()]),
            publish: Strings(vec!["anon/**".to_owned()]),
            api: None,
        });
        let err = validate(&config, &host(1)).unwrap_err();
        assert_eq!(err.key, "auth.public");
        assert!(err.message.contains("[listen]"), "{}", err.message);
    }

    #[test]
    fn keys_set_lists_every_leaf_once() {
        let loaded = load_str(&format!("{TLS}[auth]\npublic = \"\"\n"), None, &host(1)).unwrap();
        assert_eq!(
            loaded.keys_set,
            vec!["auth.public".to_owned(), "server.tls.generate".to_owned()]
        );
    }
}
