//! `[cluster] connect_api` (spec `cluster.md` 3.3): peers to dial, as a JSON array of
//! URLs, from an HTTP(S) URL polled every 30 s (with `?node=` when `[cluster] node` is
//! set, revalidated with ETag / Last-Modified, not asked again while `max-age` says the
//! last answer is fresh) or from a file, watched by polling. A list that cannot be
//! fetched or read keeps the previous one. Each new list goes to the upstream core
//! through an [`Inbox`]; the core reconciles the links it owns for the API.
//!
//! This runs on the control runtime, never on a worker or the upstream core: it owns
//! the fetching and parsing, and must never hand the core a list it would refuse.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use tracing::{debug, info, warn};

use super::peer::Peer;
use crate::config::ClientTlsConfig;

/// How often an HTTP list is asked for again (moq-relay's period).
const HTTP_POLL: Duration = Duration::from_secs(30);
/// How often a file list is looked at: a changed modification time or length is read.
const FILE_POLL: Duration = Duration::from_secs(1);
/// One request's bound, as moq-relay's.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// A list body larger than this is refused: thousands of peer URLs.
const MAX_BODY_BYTES: usize = 1 << 20;
/// Peers one list may name; a larger list is refused whole.
pub const MAX_API_PEERS: usize = 256;

/// Where the list comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Http(String),
    File(PathBuf),
}

impl Source {
    /// `http://` or `https://` is fetched; `file://` and anything else is a file path.
    pub fn parse(value: &str) -> Source {
        if value.starts_with("http://") || value.starts_with("https://") {
            Source::Http(value.to_owned())
        } else {
            Source::File(PathBuf::from(
                value.strip_prefix("file://").unwrap_or(value),
            ))
        }
    }
}

/// The newest list for the upstream core: each `put` replaces what was not taken yet.
#[derive(Debug, Default)]
pub struct Inbox(Mutex<Option<Vec<Peer>>>);

impl Inbox {
    pub fn put(&self, peers: Vec<Peer>) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(peers);
    }

    pub fn take(&self) -> Option<Vec<Peer>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

/// What the poller needs: the source, this relay's `node` (sent as `?node=`, and
/// skipped in the list), the `[cluster] token` for peers without one, and the client
/// TLS an `https://` source is fetched with.
#[derive(Debug, Clone)]
pub struct Poller {
    pub source: Source,
    pub node: Option<String>,
    pub token: Option<String>,
    pub tls: ClientTlsConfig,
    pub inbox: Arc<Inbox>,
}

/// Reads a list body: a JSON array of peer URLs. Entries naming `own_node` are skipped,
/// one spelled twice is kept once, and two spellings of one peer that differ (another
/// query, cost or token) make the whole list an error.
pub fn parse_list(
    body: &[u8],
    token: Option<&str>,
    own_node: Option<&str>,
) -> Result<Vec<Peer>, String> {
    let urls: Vec<String> = serde_json::from_slice(body)
        .map_err(|err| format!("not a JSON array of strings: {err}"))?;
    if urls.len() > MAX_API_PEERS {
        return Err(format!("{} peers, more than {MAX_API_PEERS}", urls.len()));
    }
    let own = own_node.and_then(|node| Peer::identity_key(node).ok());
    let mut by_key: HashMap<String, Peer> = HashMap::new();
    let mut peers = Vec::new();
    for url in &urls {
        let peer = Peer::parse(url, token)?;
        if own.as_ref().is_some_and(|own| *own == peer.key) {
            continue;
        }
        match by_key.get(&peer.key) {
            Some(seen) if *seen == peer => continue,
            Some(_) => return Err(format!("`{}` is listed twice, differently", peer.key)),
            None => {
                by_key.insert(peer.key.clone(), peer.clone());
                peers.push(peer);
            }
        }
    }
    Ok(peers)
}

/// Polls the source for as long as the runtime runs.
pub async fn run(poller: Poller) {
    let mut last: Option<Vec<Peer>> = None;
    let mut deliver = |peers: Vec<Peer>| {
        if last.as_ref() != Some(&peers) {
            info!(peers = peers.len(), "connect_api: new peer list");
            last = Some(peers.clone());
            poller.inbox.put(peers);
        }
    };
    match &poller.source {
        Source::File(path) => {
            let mut seen: Option<(SystemTime, u64)> = None;
            loop {
                let stamp = std::fs::metadata(path)
                    .ok()
                    .and_then(|meta| Some((meta.modified().ok()?, meta.len())));
                if stamp.is_some() && stamp != seen {
                    seen = stamp;
                    match read_file(path, &poller).await {
                        Ok(peers) => deliver(peers),
                        Err(err) => {
                            warn!(file = %path.display(), %err, "connect_api: list kept")
                        }
                    }
                }
                tokio::time::sleep(FILE_POLL).await;
            }
        }
        Source::Http(url) => {
            let client = match http_client(url, &poller.tls) {
                Ok(client) => client,
                Err(err) => {
                    warn!(%err, "connect_api: no HTTP client; no peers from the API");
                    return;
                }
            };
            let mut cache = HttpCache::default();
            loop {
                match cache.fetch(&client, url, &poller).await {
                    Ok(Some(peers)) => deliver(peers),
                    Ok(None) => debug!("connect_api: list unchanged"),
                    Err(err) => warn!(%err, "connect_api: list kept"),
                }
                tokio::time::sleep(HTTP_POLL).await;
            }
        }
    }
}

async fn read_file(path: &std::path::Path, poller: &Poller) -> Result<Vec<Peer>, String> {
    let path = path.to_owned();
    off_runtime(poller, move || {
        use std::io::Read;
        let mut body = Vec::new();
        std::fs::File::open(&path)
            .and_then(|file| file.take(MAX_BODY_BYTES as u64 + 1).read_to_end(&mut body))
            .map_err(|err| err.to_string())?;
        if body.len() > MAX_BODY_BYTES {
            return Err(format!("larger than {MAX_BODY_BYTES} bytes"));
        }
        Ok(body)
    })
    .await
}

/// Reading a file and resolving the peers' hosts may block: not on the runtime.
async fn off_runtime(
    poller: &Poller,
    body: impl FnOnce() -> Result<Vec<u8>, String> + Send + 'static,
) -> Result<Vec<Peer>, String> {
    let (token, node) = (poller.token.clone(), poller.node.clone());
    tokio::task::spawn_blocking(move || parse_list(&body()?, token.as_deref(), node.as_deref()))
        .await
        .map_err(|err| err.to_string())?
}

fn http_client(url: &str, tls: &ClientTlsConfig) -> Result<reqwest::Client, String> {
    let config = if url.starts_with("https://") {
        crate::client_tls::https_client_config(tls)
    } else {
        crate::client_tls::unused_client_config()
    }
    .map_err(|err| err.to_string())?;
    reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .no_proxy()
        .tls_backend_preconfigured(config)
        .build()
        .map_err(|err| err.to_string())
}

/// What the last good answer said about itself, for the next request.
#[derive(Default)]
struct HttpCache {
    etag: Option<String>,
    last_modified: Option<String>,
    fresh_until: Option<Instant>,
}

impl HttpCache {
    /// The list if it changed since the last good answer, `None` if it did not (a 304,
    /// or a fresh cached answer).
    async fn fetch(
        &mut self,
        client: &reqwest::Client,
        url: &str,
        poller: &Poller,
    ) -> Result<Option<Vec<Peer>>, String> {
        if self.fresh_until.is_some_and(|until| Instant::now() < until) {
            return Ok(None);
        }
        let mut url = reqwest::Url::parse(url).map_err(|err| err.to_string())?;
        if let Some(node) = &poller.node {
            url.query_pairs_mut().append_pair("node", node);
        }
        let mut request = client.get(url);
        if let Some(etag) = &self.etag {
            request = request.header(reqwest::header::IF_NONE_MATCH, etag);
        }
        if let Some(modified) = &self.last_modified {
            request = request.header(reqwest::header::IF_MODIFIED_SINCE, modified);
        }
        let response = request.send().await.map_err(|err| err.to_string())?;
        let status = response.status();
        if status == reqwest::StatusCode::NOT_MODIFIED {
            self.fresh_until = max_age(response.headers()).map(|age| Instant::now() + age);
            return Ok(None);
        }
        if !status.is_success() {
            return Err(format!("status {status}"));
        }
        let headers = response.headers().clone();
        let body = crate::decider::runner::bounded_body_of(response, MAX_BODY_BYTES).await?;
        let peers = off_runtime(poller, move || Ok(body)).await?;
        let text = |name| {
            headers
                .get(name)
                .and_then(|value: &reqwest::header::HeaderValue| value.to_str().ok())
                .map(str::to_owned)
        };
        self.etag = text(reqwest::header::ETAG);
        self.last_modified = text(reqwest::header::LAST_MODIFIED);
        self.fresh_until = max_age(&headers).map(|age| Instant::now() + age);
        Ok(Some(peers))
    }
}

/// `Cache-Control: max-age=N`, unless `no-cache` or `no-store` says to ask every time.
fn max_age(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::CACHE_CONTROL)?.to_str().ok()?;
    let directives: Vec<&str> = value.split(',').map(str::trim).collect();
    if directives
        .iter()
        .any(|d| d.eq_ignore_ascii_case("no-cache") || d.eq_ignore_ascii_case("no-store"))
    {
        return None;
    }
    directives.iter().find_map(|d| {
        let (name, seconds) = d.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("max-age")
            .then(|| seconds.trim().parse().ok().map(Duration::from_secs))
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(peers: &[Peer]) -> Vec<&str> {
        peers.iter().map(|peer| peer.key.as_str()).collect()
    }

    #[test]
    fn a_list_is_an_array_of_urls_each_peer_once_and_never_this_relay() {
        let body = br#"["https://127.0.0.1:4443/", "https://127.0.0.1:4443/",
                        "moql://127.0.0.1:5/", "https://127.0.0.1:9/"]"#;
        let peers = parse_list(body, Some("t0k"), Some("https://127.0.0.1:9/")).unwrap();
        assert_eq!(
            keys(&peers),
            ["https://127.0.0.1:4443/", "moql://127.0.0.1:5/"]
        );
        assert_eq!(peers[0].path_and_query, "/?jwt=t0k", "the cluster token");
    }

    #[test]
    fn a_list_that_cannot_be_read_is_an_error_naming_why() {
        for (body, why) in [
            (&br#"{"peers": []}"#[..], "not a JSON array"),
            (br#"["https://127.0.0.1:1/", 7]"#, "not a JSON array"),
            (br#"["ftp://127.0.0.1/"]"#, "unsupported scheme"),
            (
                br#"["https://127.0.0.1:1/?cost=1", "https://127.0.0.1:1/?cost=2"]"#,
                "listed twice, differently",
            ),
        ] {
            let err = parse_list(body, None, None).unwrap_err();
            assert!(err.contains(why), "{err}");
        }
        let many: Vec<String> = (0..=MAX_API_PEERS)
            .map(|i| format!("https://127.0.0.1:{}/", 1000 + i))
            .collect();
        let body = serde_json::to_vec(&many).unwrap();
        assert!(
            parse_list(&body, None, None)
                .unwrap_err()
                .contains("more than")
        );
    }

    #[test]
    fn a_source_is_a_url_or_a_file() {
        assert_eq!(
            Source::parse("https://api/peers"),
            Source::Http("https://api/peers".into())
        );
        assert_eq!(
            Source::parse("file:///etc/peers.json"),
            Source::File("/etc/peers.json".into())
        );
        assert_eq!(
            Source::parse("peers.json"),
            Source::File("peers.json".into())
        );
    }

    /// Answers each request with the next of `replies` (status line and headers, then
    /// `body` on a 200), and hands the test each request's head.
    async fn server(
        replies: Vec<&'static str>,
        body: String,
    ) -> (String, tokio::sync::mpsc::UnboundedReceiver<String>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/peers", listener.local_addr().unwrap());
        let (heads, seen) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            for reply in replies {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                let mut head = vec![0u8; 4096];
                let n = stream.read(&mut head).await.unwrap_or(0);
                let _ = heads.send(String::from_utf8_lossy(&head[..n]).into_owned());
                let body = if reply.starts_with("HTTP/1.1 200") {
                    body.as_str()
                } else {
                    ""
                };
                let response = format!(
                    "{reply}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
            }
        });
        (url, seen)
    }

    fn poller(url: &str) -> Poller {
        Poller {
            source: Source::Http(url.to_owned()),
            node: Some("relay-b".into()),
            token: None,
            tls: ClientTlsConfig::default(),
            inbox: Arc::default(),
        }
    }

    #[tokio::test]
    async fn an_http_list_is_revalidated_with_its_etag_and_not_asked_while_fresh() {
        let (url, mut heads) = server(
            vec![
                "HTTP/1.1 200 OK\r\netag: \"v1\"",
                "HTTP/1.1 304 Not Modified\r\ncache-control: max-age=3600",
                "HTTP/1.1 200 OK",
            ],
            r#"["https://127.0.0.1:4443/"]"#.to_owned(),
        )
        .await;
        let poller = poller(&url);
        let client = http_client(&url, &poller.tls).unwrap();
        let mut cache = HttpCache::default();

        let first = cache.fetch(&client, &url, &poller).await.unwrap();
        assert_eq!(keys(&first.unwrap()), ["https://127.0.0.1:4443/"]);
        let head = heads.recv().await.unwrap();
        assert!(head.starts_with("GET /peers?node=relay-b "), "{head}");

        assert_eq!(cache.fetch(&client, &url, &poller).await.unwrap(), None);
        let head = heads.recv().await.unwrap().to_ascii_lowercase();
        assert!(head.contains("if-none-match: \"v1\""), "{head}");

        // The 304 said the list stays fresh an hour: no request.
        assert_eq!(cache.fetch(&client, &url, &poller).await.unwrap(), None);
        assert!(heads.try_recv().is_err(), "asked while fresh");
    }

    #[tokio::test]
    async fn an_http_error_is_an_error_and_the_caller_keeps_its_list() {
        let (url, _heads) = server(vec!["HTTP/1.1 503 Service Unavailable"], String::new()).await;
        let poller = poller(&url);
        let client = http_client(&url, &poller.tls).unwrap();
        let err = HttpCache::default()
            .fetch(&client, &url, &poller)
            .await
            .unwrap_err();
        assert!(err.contains("503"), "{err}");
    }

    #[test]
    fn max_age_is_read_unless_the_answer_must_be_asked_again() {
        let headers = |value: &str| {
            let mut map = reqwest::header::HeaderMap::new();
            map.insert(reqwest::header::CACHE_CONTROL, value.parse().unwrap());
            map
        };
        assert_eq!(
            max_age(&headers("public, max-age=60")),
            Some(Duration::from_secs(60))
        );
        assert_eq!(max_age(&headers("no-cache, max-age=60")), None);
        assert_eq!(max_age(&headers("no-store")), None);
        assert_eq!(max_age(&reqwest::header::HeaderMap::new()), None);
    }
}
