//! Resolves the engine's `modelPath`. An existing local directory or `.gguf` file is used as is;
//! otherwise `owner/name[@revision]` is looked up in the local Hugging Face cache (the hub's own
//! layout, so the cache is shared with Python tools) and, unless offline, downloaded from the Hub.
//! Everything read from the environment comes through `HubEnv`, so tests never touch process state.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::error::{Error, ErrorCode, Result};

const INDEX: &str = "model.safetensors.index.json";
const PROGRESS_STEP: u64 = 1 << 20;

type Response = ureq::http::Response<ureq::Body>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelKind {
    /// A directory with config.json, safetensors weights and tokenizer.json.
    HfDir,
    Gguf,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedModel {
    pub path: PathBuf,
    pub kind: ModelKind,
}

/// Download progress of one file; `downloaded` only grows, and the last report of a file has
/// the full size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// "download" (a file coming from the hub; bytes) or "load" (weights being prepared for the
    /// backend; bytes of the weight files, advanced layer by layer).
    pub stage: &'static str,
    pub file: String,
    pub downloaded: u64,
    pub total: Option<u64>,
}

/// The environment the resolver depends on, captured once.
#[derive(Debug, Clone)]
pub struct HubEnv {
    /// Cache root (the `hub` folder): $HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub.
    pub cache_dir: PathBuf,
    /// $HF_ENDPOINT without trailing '/', default https://huggingface.co.
    pub endpoint: String,
    /// $HF_TOKEN, sent as a bearer token to the endpoint's own host only.
    pub token: Option<String>,
    /// $HF_HUB_OFFLINE is 1/true/yes/on.
    pub offline: bool,
    /// Home directory for `~` expansion.
    pub home: Option<PathBuf>,
    /// Let ureq honour HTTP(S)_PROXY / NO_PROXY (it reads them from the process environment).
    pub system_proxy: bool,
    /// PEM bundle of trusted root certificates ($SSL_CERT_FILE, else $REQUESTS_CA_BUNDLE), for
    /// TLS-inspecting proxies; it replaces the bundled Mozilla roots when it holds any certificate.
    pub ca_bundle: Option<PathBuf>,
}

impl HubEnv {
    pub fn from_process_env() -> Self {
        Self::from_vars(|k| std::env::var(k).ok())
    }

    /// Builds from a variable lookup; empty values count as unset.
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Self {
        let var = |k: &str| get(k).filter(|v| !v.trim().is_empty());
        let home = var("HOME").or_else(|| var("USERPROFILE")).map(PathBuf::from);
        let path = |v: String| expand_home(&v, home.as_deref());
        let cache_dir = var("HF_HUB_CACHE")
            .map(path)
            .or_else(|| var("HF_HOME").map(|h| path(h).join("hub")))
            .unwrap_or_else(|| {
                let base = home.clone().unwrap_or_else(std::env::temp_dir);
                base.join(".cache").join("huggingface").join("hub")
            });
        let offline = var("HF_HUB_OFFLINE")
            .is_some_and(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"));
        let endpoint = var("HF_ENDPOINT").unwrap_or_else(|| "https://huggingface.co".into());
        HubEnv {
            cache_dir,
            endpoint: endpoint.trim().trim_end_matches('/').to_string(),
            token: var("HF_TOKEN").map(|t| t.trim().to_string()),
            offline,
            ca_bundle: var("SSL_CERT_FILE").or_else(|| var("REQUESTS_CA_BUNDLE")).map(path),
            home,
            system_proxy: true,
        }
    }

    /// A self-contained environment: this cache root and endpoint, no token, online, no proxy.
    pub fn isolated(cache_dir: impl Into<PathBuf>, endpoint: &str) -> Self {
        HubEnv {
            cache_dir: cache_dir.into(),
            endpoint: endpoint.trim_end_matches('/').to_string(),
            token: None,
            offline: false,
            home: None,
            system_proxy: false,
            ca_bundle: None,
        }
    }
}

/// Resolves `modelPath` to a local directory or GGUF file, downloading from the Hub if needed.
pub fn resolve_model(
    model_path: &str,
    env: &HubEnv,
    progress: &mut dyn FnMut(Progress),
) -> Result<ResolvedModel> {
    let spec = model_path.trim();
    if spec.is_empty() {
        return Err(Error::invalid_options("modelPath is empty"));
    }
    let local = expand_home(spec, env.home.as_deref());
    let is_gguf = spec.to_ascii_lowercase().ends_with(".gguf");
    if local.is_dir() {
        return Ok(ResolvedModel { path: local, kind: ModelKind::HfDir });
    }
    if local.is_file() {
        return match is_gguf {
            true => Ok(ResolvedModel { path: local, kind: ModelKind::Gguf }),
            false => Err(Error::invalid_model(format!(
                "{}: expected a model directory or a .gguf file",
                local.display()
            ))),
        };
    }
    let looks_local = is_gguf
        || local.is_absolute()
        || spec == "."
        || spec == ".."
        || ["./", "../", "~", ".\\", "..\\"].iter().any(|p| spec.starts_with(p));
    if looks_local {
        let msg = format!("model path {} does not exist", local.display());
        return Err(Error::new(ErrorCode::ModelNotFound, msg));
    }
    let repo = RepoRef::parse(spec)?;
    let dir = env.cache_dir.join(format!("models--{}--{}", repo.owner, repo.name));
    if let Some(snapshot) = cached_snapshot(&dir, &repo.revision) {
        return Ok(ResolvedModel { path: snapshot, kind: ModelKind::HfDir });
    }
    if env.offline {
        let msg = format!(
            "{} is not in the Hugging Face cache at {} (or is incomplete) and offline mode is on \
             (HF_HUB_OFFLINE); download it first or unset HF_HUB_OFFLINE",
            repo.label(),
            dir.display()
        );
        return Err(Error::new(ErrorCode::ModelNotFound, msg));
    }
    let path = Fetcher { agent: agent(env), env, repo: &repo, dir, commit: None }.run(progress)?;
    Ok(ResolvedModel { path, kind: ModelKind::HfDir })
}

fn expand_home(p: &str, home: Option<&Path>) -> PathBuf {
    match (p.strip_prefix('~'), home) {
        (Some(""), Some(h)) => h.to_path_buf(),
        (Some(rest), Some(h)) if rest.starts_with(['/', '\\']) => h.join(&rest[1..]),
        _ => PathBuf::from(p),
    }
}

/// A repo id, revision or file name that is safe both in a URL path and as one path component.
fn safe_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && !s.contains("..")
        && s != "."
        && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

struct RepoRef {
    owner: String,
    name: String,
    revision: String,
}

impl RepoRef {
    fn parse(spec: &str) -> Result<Self> {
        let (id, revision) = spec.split_once('@').unwrap_or((spec, "main"));
        let Some((owner, name)) = id.split_once('/').filter(|(_, n)| !n.contains('/')) else {
            let msg = format!(
                "'{spec}' is neither an existing local path nor a Hugging Face repo id \
                 (owner/name or owner/name@revision)"
            );
            return Err(Error::new(ErrorCode::ModelNotFound, msg));
        };
        for (what, s) in [("owner", owner), ("name", name), ("revision", revision)] {
            if !safe_name(s) {
                return Err(Error::invalid_options(format!(
                    "'{spec}' is not an existing local path, and not a valid Hugging Face repo id: \
                     the {what} must be non-empty and use only A-Z a-z 0-9 . _ - (no '..')"
                )));
            }
        }
        Ok(RepoRef { owner: owner.into(), name: name.into(), revision: revision.into() })
    }

    fn label(&self) -> String {
        format!("{}/{}@{}", self.owner, self.name, self.revision)
    }
}

fn cached_snapshot(dir: &Path, revision: &str) -> Option<PathBuf> {
    let commit = fs::read_to_string(dir.join("refs").join(revision))
        .ok()
        .map(|c| c.trim().to_string())
        .filter(|c| safe_name(c))
        .unwrap_or_else(|| revision.to_string());
    let snapshot = dir.join("snapshots").join(commit);
    snapshot_complete(&snapshot).then_some(snapshot)
}

fn snapshot_complete(s: &Path) -> bool {
    let weights = s.join("model.safetensors").is_file()
        || fs::read(s.join(INDEX))
            .ok()
            .and_then(|b| shard_names(&b).ok())
            .is_some_and(|shards| !shards.is_empty() && shards.iter().all(|f| s.join(f).is_file()));
    weights && s.join("config.json").is_file() && s.join("tokenizer.json").is_file()
}

/// The distinct shard files an index lists; each must be a plain file name.
fn shard_names(index: &[u8]) -> Result<BTreeSet<String>> {
    let bad = |why: String| Error::invalid_model(format!("{INDEX}: {why}"));
    let v: serde_json::Value = serde_json::from_slice(index).map_err(|e| bad(e.to_string()))?;
    let map = v.get("weight_map").and_then(|m| m.as_object()).ok_or_else(|| bad("no weight_map".into()))?;
    let mut shards = BTreeSet::new();
    for f in map.values() {
        match f.as_str() {
            Some(f) if safe_name(f) => shards.insert(f.to_string()),
            _ => return Err(bad(format!("invalid shard file name {f}"))),
        };
    }
    Ok(shards)
}

fn agent(env: &HubEnv) -> ureq::Agent {
    let mut config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0) // followed by hand: the hub's own reply carries the commit and etag
        .user_agent(concat!("radixlm/", env!("CARGO_PKG_VERSION")))
        .accept_encoding("identity")
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_recv_response(Some(Duration::from_secs(60)))
        .timeout_per_read(Some(Duration::from_secs(120)));
    if !env.system_proxy {
        config = config.proxy(None);
    }
    if let Some(certs) = env.ca_bundle.as_deref().and_then(pem_certs) {
        let roots = ureq::tls::RootCerts::new_with_certs(&certs);
        config = config.tls_config(ureq::tls::TlsConfig::builder().root_certs(roots).build());
    }
    ureq::Agent::new_with_config(config.build())
}

fn pem_certs(path: &Path) -> Option<Vec<ureq::tls::Certificate<'static>>> {
    let pem = fs::read(path).ok()?;
    let certs: Vec<_> = ureq::tls::parse_pem(&pem)
        .filter_map(|item| match item {
            Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
            _ => None,
        })
        .collect();
    (!certs.is_empty()).then_some(certs)
}

/// Scheme and authority of a URL ("https://host:port").
fn origin(url: &str) -> &str {
    let start = url.find("://").map_or(0, |i| i + 3);
    url[start..].find('/').map_or(url, |j| &url[..start + j])
}

fn join_url(base: &str, location: &str) -> String {
    if location.contains("://") {
        location.to_string()
    } else if let Some(rest) = location.strip_prefix("//") {
        format!("{}//{rest}", &base[..base.find("//").unwrap_or(0)])
    } else if location.starts_with('/') {
        format!("{}{location}", origin(base))
    } else {
        format!("{}{location}", &base[..base.rfind('/').map_or(base.len(), |i| i + 1)])
    }
}

fn header(resp: &Response, name: &str) -> Option<String> {
    resp.headers().get(name).and_then(|v| v.to_str().ok()).map(|s| s.trim().to_string())
}

fn download_err(msg: String) -> Error {
    Error::new(ErrorCode::Download, msg)
}

struct Fetcher<'a> {
    agent: ureq::Agent,
    env: &'a HubEnv,
    repo: &'a RepoRef,
    dir: PathBuf,
    /// Set by the first reply; later files are fetched at this commit, so they form one snapshot.
    commit: Option<String>,
}

impl Fetcher<'_> {
    fn run(mut self, progress: &mut dyn FnMut(Progress)) -> Result<PathBuf> {
        self.fetch("config.json", true, progress)?;
        let commit = self.commit.clone().unwrap_or_else(|| self.repo.revision.clone());
        let snapshot = self.dir.join("snapshots").join(&commit);
        if self.fetch(INDEX, false, progress)? {
            let index =
                fs::read(snapshot.join(INDEX)).map_err(|e| download_err(format!("reading {INDEX}: {e}")))?;
            for shard in shard_names(&index)? {
                self.fetch(&shard, true, progress)?;
            }
        } else {
            self.fetch("model.safetensors", true, progress)?;
        }
        self.fetch("tokenizer.json", true, progress)?;
        self.fetch("tokenizer_config.json", false, progress)?;
        self.fetch("generation_config.json", false, progress)?;
        if commit != self.repo.revision {
            let refs = self.dir.join("refs");
            fs::create_dir_all(&refs)
                .and_then(|_| fs::write(refs.join(&self.repo.revision), &commit))
                .map_err(|e| download_err(format!("writing {}: {e}", refs.display())))?;
        }
        Ok(snapshot)
    }

    /// GET with redirects followed by hand; returns the final reply, the commit and the etag
    /// (both from the first reply that has them: the hub's, not the CDN's).
    fn get(&self, url: &str) -> Result<(Response, Option<String>, Option<String>)> {
        let (mut url, mut commit, mut etag) = (url.to_string(), None, None);
        for _ in 0..10 {
            let mut req = self.agent.get(&url);
            if let Some(token) =
                self.env.token.as_ref().filter(|_| origin(&url) == origin(&self.env.endpoint))
            {
                req = req.header("Authorization", format!("Bearer {token}"));
            }
            let resp = req.call().map_err(|e| {
                let tls = match e.to_string().contains("certificate") {
                    true => " (behind a TLS-inspecting proxy, point SSL_CERT_FILE at its CA bundle)",
                    false => "",
                };
                download_err(format!(
                    "could not reach the Hugging Face Hub at {} ({e}){tls}; check the network or \
                     HF_ENDPOINT, or set HF_HUB_OFFLINE=1 to use only the local cache",
                    self.env.endpoint
                ))
            })?;
            commit = commit.or_else(|| header(&resp, "x-repo-commit"));
            etag = etag.or_else(|| header(&resp, "x-linked-etag").or_else(|| header(&resp, "etag")));
            if !resp.status().is_redirection() {
                return Ok((resp, commit, etag));
            }
            let location = header(&resp, "location")
                .ok_or_else(|| download_err(format!("redirect without location from {url}")))?;
            url = join_url(&url, &location);
        }
        Err(download_err(format!("too many redirects fetching {url}")))
    }

    /// Downloads one file into the snapshot; Ok(false) when an optional file is absent.
    fn fetch(&mut self, file: &str, required: bool, progress: &mut dyn FnMut(Progress)) -> Result<bool> {
        if let Some(c) = &self.commit {
            if self.dir.join("snapshots").join(c).join(file).is_file() {
                return Ok(true); // left by an earlier, interrupted download
            }
        }
        let rev = self.commit.clone().unwrap_or_else(|| self.repo.revision.clone());
        let (owner, name, endpoint) = (&self.repo.owner, &self.repo.name, &self.env.endpoint);
        let url = format!("{endpoint}/{owner}/{name}/resolve/{rev}/{file}");
        let (resp, commit, etag) = self.get(&url)?;
        let status = resp.status().as_u16();
        let server_says = header(&resp, "x-error-message")
            .map(|m| format!(" ({})", m.chars().take(200).collect::<String>()));
        match status {
            200 => {}
            404 if !required => return Ok(false),
            401 | 403 => {
                let hint = match self.env.token {
                    Some(_) => {
                        "the token in HF_TOKEN does not grant access; accept the model's terms on the Hub"
                    }
                    None => {
                        "if gated or private, accept its terms on the Hub and set HF_TOKEN to an access token"
                    }
                };
                let msg = format!(
                    "{}: access denied by {endpoint} (HTTP {status}): the repo is gated, private or does \
                     not exist; {hint}",
                    self.repo.label()
                );
                return Err(Error::new(ErrorCode::ModelNotFound, msg));
            }
            404 => {
                let msg = format!(
                    "{}: {file} not found on {endpoint}{}",
                    self.repo.label(),
                    server_says.unwrap_or_default()
                );
                return Err(Error::new(ErrorCode::ModelNotFound, msg));
            }
            _ => {
                return Err(download_err(format!(
                    "HTTP {status} fetching {url}{}",
                    server_says.unwrap_or_default()
                )))
            }
        }
        let commit =
            self.commit.get_or_insert_with(|| commit.filter(|c| safe_name(c)).unwrap_or(rev)).clone();
        let snapshot = self.dir.join("snapshots").join(&commit);
        let target = snapshot.join(file);
        let blob =
            etag.map(|e| e.trim_start_matches("W/").trim_matches('"').to_string()).filter(|e| safe_name(e));
        let blob = blob.map(|e| self.dir.join("blobs").join(e));
        let dest = blob.as_deref().unwrap_or(&target);
        let io = |what: &Path, e: std::io::Error| download_err(format!("writing {}: {e}", what.display()));
        fs::create_dir_all(&snapshot).map_err(|e| io(&snapshot, e))?;
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
        }
        if !dest.is_file() {
            save(resp, dest, file, progress)?;
        }
        if let Some(blob) = &blob {
            link_blob(blob, &target).map_err(|e| io(&target, e))?;
        }
        Ok(true)
    }
}

/// Streams the body to `<dest>.<unique>.incomplete`, checks the size, then renames into place.
fn save(resp: Response, dest: &Path, file: &str, progress: &mut dyn FnMut(Progress)) -> Result<()> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let total = match resp.headers().contains_key("content-encoding") {
        true => None,
        false => resp.body().content_length(),
    };
    let mut tmp = dest.as_os_str().to_owned();
    tmp.push(format!(".{}-{}.incomplete", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed)));
    let tmp = PathBuf::from(tmp);
    let report = |downloaded| Progress { stage: "download", file: file.to_string(), downloaded, total };
    let result = (|| {
        let io = |e: std::io::Error| download_err(format!("writing {}: {e}", tmp.display()));
        let mut out = File::create(&tmp).map_err(io)?;
        let mut body = resp.into_body().into_reader();
        let mut buf = vec![0u8; 256 * 1024];
        let (mut done, mut reported) = (0u64, 0u64);
        loop {
            let n = match body.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(download_err(format!("download of {file} failed after {done} bytes: {e}")))
                }
            };
            out.write_all(&buf[..n]).map_err(io)?;
            done += n as u64;
            if done - reported >= PROGRESS_STEP {
                progress(report(done));
                reported = done;
            }
        }
        if let Some(total) = total.filter(|&t| t != done) {
            return Err(download_err(format!("download of {file} cut short: got {done} of {total} bytes")));
        }
        out.sync_all().map_err(io)?;
        drop(out);
        fs::rename(&tmp, dest).map_err(io)?;
        progress(report(done));
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Puts `snapshots/<commit>/<file>` in place as a relative symlink to the blob, as the hub cache
/// does; where symlinks are unavailable, a hard link or a copy.
fn link_blob(blob: &Path, target: &Path) -> std::io::Result<()> {
    let _ = fs::remove_file(target);
    #[cfg(unix)]
    if let Some(name) = blob.file_name() {
        if std::os::unix::fs::symlink(Path::new("../../blobs").join(name), target).is_ok() {
            return Ok(());
        }
    }
    fs::hard_link(blob, target).or_else(|_| fs::copy(blob, target).map(|_| ()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader};
    use std::net::TcpListener;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;

    const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

    enum Reply {
        Body(Vec<u8>),
        Status(u16),
        /// Declares the second length, sends the bytes, then closes the connection.
        Truncated(Vec<u8>, usize),
    }

    fn weights(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 % 251) as u8).collect()
    }

    fn index(shards: &[&str]) -> Vec<u8> {
        let map: serde_json::Map<_, _> =
            shards.iter().enumerate().map(|(i, s)| (format!("w{i}"), (*s).into())).collect();
        serde_json::json!({ "metadata": {}, "weight_map": map }).to_string().into_bytes()
    }

    /// The fake hub's content: (repo, file, authorization header) -> reply.
    fn fake_hub(repo: &str, file: &str, auth: Option<&str>) -> Reply {
        use Reply::*;
        if repo == "acme/gated" && auth != Some("Bearer secret") {
            return Status(401);
        }
        match (repo, file) {
            ("acme/nope", _) => Status(404),
            (_, "config.json") => Body(br#"{"model_type":"llama"}"#.to_vec()),
            (_, "tokenizer.json") => Body(b"{}".to_vec()),
            ("acme/tiny" | "acme/gated", "model.safetensors") => Body(weights(3 << 20)),
            ("acme/tiny", "generation_config.json") => Body(b"{}".to_vec()),
            ("acme/sharded", INDEX) => {
                Body(index(&["m-1-of-2.safetensors", "m-2-of-2.safetensors", "m-1-of-2.safetensors"]))
            }
            ("acme/sharded", f) if f.starts_with("m-") => Body(weights(1000 + f.len())),
            ("acme/evil", INDEX) => Body(index(&["../evil.safetensors"])),
            ("acme/trunc", "model.safetensors") => Truncated(weights(5000), 10000),
            _ => Status(404),
        }
    }

    /// Serves `fake_hub` in the hub's URL layout; weight files are redirected to /cdn/..., as the
    /// real hub does. Returns the endpoint and a request counter.
    fn serve() -> (String, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                counter.fetch_add(1, Ordering::SeqCst);
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let (mut request, mut auth, mut line) = (String::new(), None, String::new());
                if reader.read_line(&mut request).is_err() {
                    continue;
                }
                while matches!(reader.read_line(&mut line), Ok(n) if n > 2) {
                    if let Some((k, v)) = line.split_once(':') {
                        if k.eq_ignore_ascii_case("authorization") {
                            auth = Some(v.trim().to_string());
                        }
                    }
                    line.clear();
                }
                let path = request.split(' ').nth(1).unwrap_or("/").to_string();
                let (cdn, path) = match path.strip_prefix("/cdn") {
                    Some(p) => (true, p.to_string()),
                    None => (false, path),
                };
                let parts: Vec<&str> = path.trim_start_matches('/').splitn(5, '/').collect();
                let reply = match parts[..] {
                    [o, n, "resolve", _rev, f] => fake_hub(&format!("{o}/{n}"), f, auth.as_deref()),
                    _ => Reply::Status(400),
                };
                let meta = format!("x-repo-commit: {COMMIT}\r\n");
                let head = |code: u16, len: usize, extra: &str| {
                    format!("HTTP/1.1 {code} X\r\nContent-Length: {len}\r\nConnection: close\r\n{extra}\r\n")
                };
                let (head, body) = match reply {
                    Reply::Status(code) => (head(code, 0, &meta), vec![]),
                    Reply::Body(b) if !cdn && path.ends_with(".safetensors") => {
                        let extra = format!(
                            "{meta}x-linked-etag: \"{:x}{}\"\r\nLocation: /cdn{path}\r\n",
                            b.len(),
                            "ab".repeat(8)
                        );
                        (head(302, 0, &extra), vec![])
                    }
                    Reply::Body(b) => (head(200, b.len(), if cdn { "" } else { &meta }), b),
                    Reply::Truncated(b, len) => (head(200, len, &meta), b),
                };
                let _ = stream.write_all(head.as_bytes()).and_then(|_| stream.write_all(&body));
            }
        });
        (endpoint, hits)
    }

    fn temp_dir(tag: &str) -> PathBuf {
        static N: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        let n = N.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("radixlm-hub-{tag}-{}-{nanos}-{n}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn files_under(dir: &Path) -> Vec<PathBuf> {
        let Ok(entries) = fs::read_dir(dir) else { return vec![] };
        entries
            .flatten()
            .flat_map(|e| match e.file_type().unwrap().is_dir() {
                true => files_under(&e.path()),
                false => vec![e.path()],
            })
            .collect()
    }

    fn closed_endpoint() -> String {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    }

    fn resolve(spec: &str, env: &HubEnv) -> Result<ResolvedModel> {
        resolve_model(spec, env, &mut |_| {})
    }

    #[test]
    fn local_dir_and_gguf_are_used_as_is() {
        let tmp = temp_dir("local");
        let env = HubEnv::isolated(tmp.join("cache"), &closed_endpoint());
        let r = resolve(tmp.to_str().unwrap(), &env).unwrap();
        assert_eq!(r, ResolvedModel { path: tmp.clone(), kind: ModelKind::HfDir });
        let gguf = tmp.join("m.Q4_K_M.gguf");
        fs::write(&gguf, b"GGUF").unwrap();
        let r = resolve(gguf.to_str().unwrap(), &env).unwrap();
        assert_eq!(r, ResolvedModel { path: gguf, kind: ModelKind::Gguf });
        fs::write(tmp.join("x.bin"), b"").unwrap();
        let e = resolve(tmp.join("x.bin").to_str().unwrap(), &env).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidModel);
        let _ = fs::remove_dir_all(&tmp);
    }

    #[test]
    fn missing_local_paths_and_bad_repo_ids() {
        let tmp = temp_dir("missing");
        let mut env = HubEnv::isolated(tmp.join("cache"), &closed_endpoint());
        env.home = Some(tmp.clone());
        let missing = tmp.join("nope");
        for (spec, named) in [
            (missing.to_str().unwrap(), missing.display().to_string()),
            ("~/models/x", tmp.join("models/x").display().to_string()),
            ("./nope", "./nope".into()),
            ("nope.gguf", "nope.gguf".into()),
        ] {
            let e = resolve(spec, &env).unwrap_err();
            assert_eq!(e.code, ErrorCode::ModelNotFound, "{spec}: {e}");
            assert!(e.message.contains(&named), "{spec}: {e}");
        }
        for spec in ["gpt2", "a/b/c"] {
            assert_eq!(resolve(spec, &env).unwrap_err().code, ErrorCode::ModelNotFound, "{spec}");
        }
        for spec in ["a b/c", "acme/..x", "acme/x@", "acme/x@v1..2", "acme/\u{e9}"] {
            let e = resolve(spec, &env).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidOptions, "{spec}: {e}");
        }
        assert_eq!(resolve("  ", &env).unwrap_err().code, ErrorCode::InvalidOptions);
        let _ = fs::remove_dir_all(&tmp);
    }

    #[test]
    fn env_precedence() {
        let vars = |pairs: &'static [(&'static str, &'static str)]| {
            HubEnv::from_vars(move |k| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string()))
        };
        let e = vars(&[
            ("HOME", "/h"),
            ("HF_HOME", "/hf"),
            ("HF_HUB_CACHE", "~/c"),
            ("HF_HUB_OFFLINE", "TRUE"),
            ("SSL_CERT_FILE", "~/ca.pem"),
        ]);
        assert_eq!(e.ca_bundle, Some(PathBuf::from("/h/ca.pem")));
        assert_eq!((e.cache_dir, e.offline), (PathBuf::from("/h/c"), true));
        let e = vars(&[("HOME", "/h"), ("HF_HOME", "/hf"), ("HF_HUB_OFFLINE", "0"), ("HF_TOKEN", "")]);
        assert_eq!((e.cache_dir, e.offline, e.token), (PathBuf::from("/hf/hub"), false, None));
        let e = vars(&[("HOME", "/h"), ("HF_ENDPOINT", "http://mirror/"), ("HF_TOKEN", "t")]);
        assert_eq!(e.cache_dir, PathBuf::from("/h/.cache/huggingface/hub"));
        assert_eq!((e.endpoint.as_str(), e.token.as_deref()), ("http://mirror", Some("t")));
        assert_eq!(vars(&[]).endpoint, "https://huggingface.co");
    }

    #[test]
    fn cached_repo_needs_no_request() {
        let tmp = temp_dir("cached");
        let (endpoint, hits) = serve();
        let repo = tmp.join("models--acme--cached");
        let snap = repo.join("snapshots").join(COMMIT);
        fs::create_dir_all(repo.join("refs")).unwrap();
        fs::create_dir_all(&snap).unwrap();
        fs::write(repo.join("refs/v1"), format!("{COMMIT}\n")).unwrap();
        for f in ["config.json", "tokenizer.json", "model.safetensors"] {
            fs::write(snap.join(f), b"{}").unwrap();
        }
        let env = HubEnv::isolated(&tmp, &endpoint);
        assert_eq!(resolve("acme/cached@v1", &env).unwrap().path, snap);
        let offline = HubEnv { offline: true, ..env.clone() };
        assert_eq!(resolve("acme/cached@v1", &offline).unwrap().path, snap);
        assert_eq!(hits.load(Ordering::SeqCst), 0);
        let _ = fs::remove_dir_all(&tmp);
    }

    #[test]
    fn downloads_single_file_repo_then_uses_cache() {
        let tmp = temp_dir("tiny");
        let (endpoint, hits) = serve();
        let env = HubEnv::isolated(&tmp, &endpoint);
        let mut seen = vec![];
        let r = resolve_model("acme/tiny", &env, &mut |p| seen.push(p)).unwrap();
        let repo = tmp.join("models--acme--tiny");
        assert_eq!(r, ResolvedModel { path: repo.join("snapshots").join(COMMIT), kind: ModelKind::HfDir });
        assert_eq!(fs::read_to_string(repo.join("refs/main")).unwrap(), COMMIT);
        assert_eq!(fs::read(r.path.join("model.safetensors")).unwrap(), weights(3 << 20));
        assert!(r.path.join("generation_config.json").is_file());
        assert!(!r.path.join("tokenizer_config.json").exists());
        #[cfg(unix)]
        {
            let link = fs::read_link(r.path.join("model.safetensors")).unwrap();
            assert!(link.starts_with("../../blobs"), "{link:?}");
        }
        let w: Vec<&Progress> = seen.iter().filter(|p| p.file == "model.safetensors").collect();
        assert!(w.len() >= 3, "{w:?}");
        assert!(w.windows(2).all(|p| p[0].downloaded <= p[1].downloaded));
        let size = 3u64 << 20;
        assert_eq!((w.last().unwrap().downloaded, w[0].total), (size, Some(size)));
        assert!(seen.iter().any(|p| p.file == "config.json"));
        assert!(files_under(&tmp).iter().all(|f| !f.to_string_lossy().ends_with(".incomplete")));

        let before = hits.load(Ordering::SeqCst);
        assert_eq!(resolve("acme/tiny", &env).unwrap(), r);
        assert_eq!(hits.load(Ordering::SeqCst), before, "second resolve must not hit the network");
        let _ = fs::remove_dir_all(&tmp);
    }

    #[test]
    fn downloads_sharded_repo() {
        let tmp = temp_dir("sharded");
        let (endpoint, _) = serve();
        let r = resolve("acme/sharded", &HubEnv::isolated(&tmp, &endpoint)).unwrap();
        for (f, n) in [("m-1-of-2.safetensors", 1020), ("m-2-of-2.safetensors", 1020)] {
            assert_eq!(fs::read(r.path.join(f)).unwrap(), weights(n));
        }
        assert!(r.path.join(INDEX).is_file() && !r.path.join("model.safetensors").exists());
        assert!(snapshot_complete(&r.path));
        let _ = fs::remove_dir_all(&tmp);
    }

    #[test]
    fn offline_and_absent_is_not_found() {
        let tmp = temp_dir("offline");
        let (endpoint, hits) = serve();
        let env = HubEnv { offline: true, ..HubEnv::isolated(&tmp, &endpoint) };
        let e = resolve("acme/tiny", &env).unwrap_err();
        assert_eq!(e.code, ErrorCode::ModelNotFound);
        assert!(e.message.contains("offline") && e.message.contains(&tmp.display().to_string()), "{e}");
        assert_eq!(hits.load(Ordering::SeqCst), 0);
        let _ = fs::remove_dir_all(&tmp);
    }

    #[test]
    fn gated_missing_and_unreachable() {
        let tmp = temp_dir("gated");
        let (endpoint, _) = serve();
        let env = HubEnv::isolated(&tmp, &endpoint);
        let e = resolve("acme/gated", &env).unwrap_err();
        assert_eq!(e.code, ErrorCode::ModelNotFound);
        assert!(e.message.contains("HF_TOKEN") && e.message.contains("gated"), "{e}");
        let wrong = HubEnv { token: Some("wrong".into()), ..env.clone() };
        assert!(resolve("acme/gated", &wrong).unwrap_err().message.contains("HF_TOKEN"));
        let with_token = HubEnv { token: Some("secret".into()), ..env.clone() };
        assert!(resolve("acme/gated", &with_token).is_ok());

        let e = resolve("acme/nope", &env).unwrap_err();
        assert_eq!(e.code, ErrorCode::ModelNotFound, "{e}");

        let closed = closed_endpoint();
        let e = resolve("acme/tiny", &HubEnv::isolated(&tmp, &closed)).unwrap_err();
        assert_eq!(e.code, ErrorCode::Download);
        assert!(e.message.contains(&closed) && e.message.contains("HF_HUB_OFFLINE"), "{e}");
        let _ = fs::remove_dir_all(&tmp);
    }

    #[test]
    fn malicious_shard_name_is_rejected() {
        let tmp = temp_dir("evil");
        let (endpoint, _) = serve();
        let e = resolve("acme/evil", &HubEnv::isolated(tmp.join("hub"), &endpoint)).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidModel, "{e}");
        assert!(files_under(&tmp).iter().all(|f| !f.to_string_lossy().contains("evil.safetensors")));
        let _ = fs::remove_dir_all(&tmp);
    }

    #[test]
    fn truncated_transfer_leaves_nothing() {
        let tmp = temp_dir("trunc");
        let (endpoint, _) = serve();
        let env = HubEnv::isolated(&tmp, &endpoint);
        let e = resolve("acme/trunc", &env).unwrap_err();
        assert_eq!(e.code, ErrorCode::Download, "{e}");
        let repo = tmp.join("models--acme--trunc");
        let snap = files_under(&repo.join("snapshots"));
        assert!(snap.iter().all(|f| !f.ends_with("model.safetensors")), "{snap:?}");
        assert!(files_under(&repo).iter().all(|f| !f.to_string_lossy().ends_with(".incomplete")));
        assert!(!repo.join("refs/main").exists());
        let _ = fs::remove_dir_all(&tmp);
    }
}
