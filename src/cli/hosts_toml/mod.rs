//! `patchpull hosts-toml`: containerd `hosts.toml` files that send the pulls of every
//! configured upstream through patchpull, so a node needs no hand-written mirror config.
//!
//! containerd looks up `<config_path>/<registry host>/hosts.toml` for the host an image
//! reference names and, when the host it talks to is not that registry, adds `?ns=<registry
//! host>` to each request. The directory name is therefore what patchpull must route by; a
//! file whose `ns=` patchpull would send elsewhere is refused rather than written.

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use reqwest::Url;
use serde::Serialize;

use crate::config::{Config, UpstreamConfig};

/// Docker Hub's API host; image references (and so containerd's directory) say `docker.io`.
const DOCKER_HUB_API: &str = "registry-1.docker.io";
const DOCKER_HUB: &str = "docker.io";
/// A mirror may resolve tags (the point: patched digests) and serve content, never take pushes.
const CAPABILITIES: [&str; 2] = ["pull", "resolve"];

#[derive(Debug, clap::Args)]
pub struct HostsTomlArgs {
    /// patchpull's base URL as containerd on the nodes reaches it, e.g.
    /// https://patchpull.example:5000 (http://... when patchpull runs without TLS).
    #[arg(long, value_name = "URL")]
    server: String,
    /// Make patchpull the only registry host: pulls fail while it fails, instead of falling
    /// back to the upstream with unpatched images.
    #[arg(long)]
    fail_closed: bool,
    /// A header containerd sends to patchpull, e.g. 'Authorization=Bearer TOKEN'. Repeatable;
    /// files with headers are written readable by their owner only.
    #[arg(long = "header", value_name = "NAME=VALUE")]
    headers: Vec<String>,
    /// CA certificate that signed patchpull's certificate, as a path on the node; a relative
    /// path is relative to each host's directory (containerd's rule).
    #[arg(long, value_name = "PATH")]
    ca: Option<String>,
    /// Do not verify patchpull's TLS certificate (for tests; prefer --ca).
    #[arg(long)]
    skip_verify: bool,
    /// Directory that receives `<host>/hosts.toml`: containerd's `config_path`.
    #[arg(long, value_name = "DIR", default_value = "certs.d")]
    out: PathBuf,
}

/// Why no file was written; each names the flag or upstream at fault.
#[derive(Debug, thiserror::Error)]
pub enum HostsTomlError {
    #[error("--server {url:?}: {reason}")]
    ServerUrl { url: String, reason: String },
    #[error("--header {header:?}: {reason}")]
    Header { header: String, reason: String },
    #[error(
        "the configuration names no upstream, so there is no registry to write a hosts.toml for"
    )]
    NoUpstreams,
    #[error("upstream {name:?}: its URL {url} has no host")]
    NoHost { name: String, url: String },
    #[error(
        "upstream {name:?}: containerd asks for {host} images with ns={host}, which patchpull \
         routes {routed}; {hint}"
    )]
    Unroutable {
        name: String,
        host: String,
        routed: String,
        hint: String,
    },
    #[error("cannot render {host}/hosts.toml: {source}")]
    Render {
        host: String,
        #[source]
        source: toml::ser::Error,
    },
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Whether containerd may go to the upstream itself when patchpull fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// patchpull first, the upstream after it (any status above 399, or no connection).
    FailOpen,
    /// patchpull only.
    FailClosed,
}

/// patchpull as containerd reaches it, and what containerd sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirror {
    /// `scheme://host[:port]`, no path: containerd appends `/v2` itself.
    pub url: String,
    /// Header name to values, in the order given.
    pub headers: BTreeMap<String, Vec<String>>,
    pub ca: Option<String>,
    pub skip_verify: bool,
}

/// One rendered file: `<host>/hosts.toml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostsFile {
    /// The registry host as image references name it: containerd's directory name.
    pub host: String,
    pub text: String,
}

impl Mirror {
    /// Checks the `--server` URL and the `--header` values as containerd will use them.
    pub fn new(
        server: &str,
        headers: &[String],
        ca: Option<String>,
        skip_verify: bool,
    ) -> Result<Mirror, HostsTomlError> {
        let url = mirror_url(server)?;
        let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for raw in headers {
            let (name, value) = parse_header(raw)?;
            map.entry(name).or_default().push(value);
        }
        Ok(Mirror {
            url,
            headers: map,
            ca,
            skip_verify,
        })
    }
}

fn mirror_url(server: &str) -> Result<String, HostsTomlError> {
    let bad = |reason: &str| HostsTomlError::ServerUrl {
        url: server.to_string(),
        reason: reason.to_string(),
    };
    let url = Url::parse(server).map_err(|e| bad(&format!("not a URL ({e})")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("the scheme must be https or http"));
    }
    let host = url.host_str().ok_or_else(|| bad("the URL has no host"))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad(
            "containerd does not take credentials in a host URL; use --header",
        ));
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        // containerd would send /<path>/v2/...; patchpull serves the API at /v2/.
        return Err(bad(
            "give only scheme://host[:port]: patchpull serves /v2/ at its root",
        ));
    }
    Ok(match url.port() {
        Some(port) => format!("{}://{host}:{port}", url.scheme()),
        None => format!("{}://{host}", url.scheme()),
    })
}

/// `NAME=VALUE`, with NAME an HTTP token and VALUE free of control characters (Go's HTTP
/// client refuses such a header, which would fail every pull).
fn parse_header(raw: &str) -> Result<(String, String), HostsTomlError> {
    let bad = |reason: &str| HostsTomlError::Header {
        header: raw.to_string(),
        reason: reason.to_string(),
    };
    let (name, value) = raw
        .split_once('=')
        .ok_or_else(|| bad("expected NAME=VALUE, e.g. 'Authorization=Bearer TOKEN'"))?;
    let name = name.trim();
    let value = value.trim();
    let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if name.is_empty() || !name.chars().all(token) {
        return Err(bad(
            "the name must be an HTTP header name (letters, digits, -, ...)",
        ));
    }
    if value.chars().any(|c| c.is_control() && c != '\t') {
        return Err(bad("the value must not contain control characters"));
    }
    Ok((name.to_string(), value.to_string()))
}

/// containerd's directory for an upstream: its URL's `host[:port]`, and `docker.io` for
/// Docker Hub, whose API host is not the name images carry.
pub fn containerd_host(url: &Url) -> Option<String> {
    let host = url.host_str()?;
    if host == DOCKER_HUB_API && url.port().is_none() {
        return Some(DOCKER_HUB.to_string());
    }
    Some(match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    })
}

/// The upstream `ns=<host>` selects in patchpull: a name or alias first, then a URL's
/// `host[:port]` (the order of `upstream::Allowlist::route`).
fn routed_by_ns(upstreams: &[UpstreamConfig], ns: &str) -> Option<usize> {
    upstreams
        .iter()
        .position(|u| u.name == ns || u.aliases.iter().any(|a| a == ns))
        .or_else(|| upstreams.iter().position(|u| u.authority() == ns))
}

/// The upstream's URL as containerd's `server`: no trailing `/`, or containerd asks `//v2`.
fn server_url(url: &Url) -> String {
    url.as_str().trim_end_matches('/').to_string()
}

/// One file per upstream, in the configuration's order.
pub fn render_all(
    upstreams: &[UpstreamConfig],
    mirror: &Mirror,
    mode: Mode,
) -> Result<Vec<HostsFile>, HostsTomlError> {
    if upstreams.is_empty() {
        return Err(HostsTomlError::NoUpstreams);
    }
    let mut files = Vec::with_capacity(upstreams.len());
    for (index, upstream) in upstreams.iter().enumerate() {
        let host = containerd_host(&upstream.url).ok_or_else(|| HostsTomlError::NoHost {
            name: upstream.name.clone(),
            url: upstream.url.to_string(),
        })?;
        match routed_by_ns(upstreams, &host) {
            Some(i) if i == index => {}
            other => {
                let routed = match other {
                    Some(i) => format!("to upstream {:?}", upstreams[i].name),
                    None => "nowhere (404 NAME_UNKNOWN)".to_string(),
                };
                let hint = if other.is_none() {
                    format!("add aliases = [{host:?}] to this upstream")
                } else {
                    "two upstreams claim this registry host; keep one".to_string()
                };
                return Err(HostsTomlError::Unroutable {
                    name: upstream.name.clone(),
                    host,
                    routed,
                    hint,
                });
            }
        }
        let text = render(&host, &server_url(&upstream.url), mirror, mode)?;
        files.push(HostsFile { host, text });
    }
    Ok(files)
}

#[derive(Serialize)]
#[serde(untagged)]
enum HeaderValue<'a> {
    One(&'a str),
    Many(&'a [String]),
}

/// TLS and header settings for patchpull, at the top level or in its `[host]` table.
#[derive(Serialize)]
struct HostSettings<'a> {
    capabilities: [&'a str; 2],
    #[serde(skip_serializing_if = "Option::is_none")]
    ca: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    skip_verify: Option<bool>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    header: BTreeMap<&'a str, HeaderValue<'a>>,
}

#[derive(Serialize)]
struct FailOpenDoc<'a> {
    server: &'a str,
    host: BTreeMap<&'a str, HostSettings<'a>>,
}

#[derive(Serialize)]
struct FailClosedDoc<'a> {
    server: &'a str,
    #[serde(flatten)]
    settings: HostSettings<'a>,
    /// Empty: containerd 1.6 and early 1.7 refuse a file without a `host` table
    /// ("invalid `host` tree", containerd#10027); a second entry for patchpull would make
    /// containerd ask it twice after each failure.
    host: BTreeMap<&'a str, ()>,
}

fn settings(mirror: &Mirror) -> HostSettings<'_> {
    HostSettings {
        capabilities: CAPABILITIES,
        ca: mirror.ca.as_deref(),
        skip_verify: mirror.skip_verify.then_some(true),
        header: mirror
            .headers
            .iter()
            .map(|(name, values)| {
                let value = match values.as_slice() {
                    [one] => HeaderValue::One(one),
                    many => HeaderValue::Many(many),
                };
                (name.as_str(), value)
            })
            .collect(),
    }
}

/// The text of `<host>/hosts.toml`: a comment saying what it does, then the TOML.
pub fn render(
    host: &str,
    upstream: &str,
    mirror: &Mirror,
    mode: Mode,
) -> Result<String, HostsTomlError> {
    let body = match mode {
        Mode::FailOpen => toml::to_string(&FailOpenDoc {
            server: upstream,
            host: BTreeMap::from([(mirror.url.as_str(), settings(mirror))]),
        }),
        Mode::FailClosed => toml::to_string(&FailClosedDoc {
            server: &mirror.url,
            settings: settings(mirror),
            host: BTreeMap::new(),
        }),
    }
    .map_err(|source| HostsTomlError::Render {
        host: host.to_string(),
        source,
    })?;
    let mut text = format!(
        "# containerd's settings for {host} images, written by `patchpull hosts-toml`.\n\
         # Install as /etc/containerd/certs.d/{host}/hosts.toml, with\n\
         # config_path = \"/etc/containerd/certs.d\" in containerd's CRI registry config.\n\
         # Edits apply without a restart.\n#\n"
    );
    match mode {
        Mode::FailOpen => text.push_str(
            "# Fail-open: containerd resolves tags and pulls through patchpull first, and goes to\n\
             # the upstream (server) itself when patchpull cannot be reached or answers a status\n\
             # above 399. Pulls keep working while patchpull is down, with unpatched images.\n",
        ),
        Mode::FailClosed => text.push_str(&format!(
            "# Fail-closed: patchpull (server) is the only registry containerd uses for these\n\
             # images; while it is down or refuses an image, the pull fails. patchpull itself\n\
             # fetches them from {upstream}.\n\
             # The empty [host] table is for containerd 1.6 and early 1.7, which reject a file\n\
             # without one.\n"
        )),
    }
    text.push('\n');
    text.push_str(&body);
    Ok(text)
}

/// Writes `dir/<host>/hosts.toml` through a temporary file and a rename, so a containerd
/// reading it meanwhile sees the old or the new file, never half of one. `private`: only
/// the owner may read it (it carries a header secret).
pub fn write_file(dir: &Path, file: &HostsFile, private: bool) -> Result<PathBuf, HostsTomlError> {
    let host_dir = dir.join(&file.host);
    let path = host_dir.join("hosts.toml");
    let err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| HostsTomlError::Write { path, source }
    };
    std::fs::create_dir_all(&host_dir).map_err(err(&host_dir))?;
    let mode = if private { 0o600 } else { 0o644 };
    let mut temp = crate::durable::TempFile::with_mode(&host_dir, mode).map_err(err(&host_dir))?;
    temp.file_mut()
        .write_all(file.text.as_bytes())
        .map_err(err(&path))?;
    temp.commit(&path).map_err(err(&path))?;
    Ok(path)
}

/// `patchpull hosts-toml`: renders every file first, so a bad upstream writes none.
pub fn run(config: Config, args: HostsTomlArgs) -> anyhow::Result<()> {
    let mirror = Mirror::new(&args.server, &args.headers, args.ca, args.skip_verify)?;
    let mode = if args.fail_closed {
        Mode::FailClosed
    } else {
        Mode::FailOpen
    };
    let files = render_all(&config.upstream, &mirror, mode)?;
    let private = !mirror.headers.is_empty();
    for file in &files {
        let path = write_file(&args.out, file, private)?;
        println!("{}", path.display());
    }
    Ok(())
}
