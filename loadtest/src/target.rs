//! The servers under test: loopback only, tokens, WebSocket connections and the few
//! HTTP calls the scenarios need, for one node (`Target`) or several (`Cluster`).

use std::net::ToSocketAddrs;
use std::time::Duration;

use anyhow::{bail, Context};
use futures_util::future::try_join_all;
use serde_json::{json, Value};

use crate::ws::WebSocket;

#[derive(Clone)]
pub struct Target {
    http: String,
    /// `host:port`, for the WebSocket.
    address: String,
    client: reqwest::Client,
}

/// Every node `--url` names, in order; never empty.
pub struct Cluster {
    nodes: Vec<Target>,
}

impl Cluster {
    /// Parses a comma-separated list of base URLs; refuses the whole list if any entry
    /// is empty or not loopback.
    pub fn parse(urls: &str) -> anyhow::Result<Cluster> {
        // One client for all nodes: its pool keeps idle connections per host anyway.
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .timeout(Duration::from_secs(30))
            .build()?;
        let nodes = urls
            .split(',')
            .map(|url| match url.trim() {
                "" => bail!("--url {urls:?} has an empty entry"),
                url => Target::parse(url, client.clone()),
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Cluster { nodes })
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// The node client `client` uses, for its token, its HTTP calls and its
    /// WebSocket: round-robin, so clients spread evenly over the nodes.
    pub fn node(&self, client: usize) -> &Target {
        &self.nodes[client % self.nodes.len()]
    }

    /// The only node, or `None` when there are several.
    pub fn single(&self) -> Option<&Target> {
        match self.nodes.as_slice() {
            [node] => Some(node),
            _ => None,
        }
    }

    /// A gauge or counter from `/metrics`, summed over all nodes.
    pub async fn metric(&self, name: &str) -> anyhow::Result<f64> {
        let values = try_join_all(self.nodes.iter().map(|node| node.metric(name))).await?;
        Ok(values.into_iter().sum())
    }

    /// The resident memory of all nodes together.
    pub async fn server_rss(&self) -> anyhow::Result<u64> {
        Ok(self.metric("process_resident_memory_bytes").await? as u64)
    }
}

impl Target {
    /// Accepts only URLs whose every address is loopback: load goes nowhere else.
    fn parse(url: &str, client: reqwest::Client) -> anyhow::Result<Target> {
        let parsed = url::Url::parse(url).with_context(|| format!("bad --url {url:?}"))?;
        if parsed.scheme() != "http" {
            bail!("--url must be http://HOST:PORT (the WebSocket URL is derived from it)");
        }
        let host = parsed.host_str().context("--url has no host")?;
        let port = parsed.port_or_known_default().unwrap_or(80);
        let addrs: Vec<_> = (host, port)
            .to_socket_addrs()
            .with_context(|| format!("resolving {host}"))?
            .collect();
        if addrs.is_empty() || addrs.iter().any(|a| !a.ip().is_loopback()) {
            bail!("refusing to load {host}: the load tester only targets loopback addresses");
        }
        let base = format!("{host}:{port}");
        Ok(Target {
            http: format!("http://{base}"),
            address: base,
            client,
        })
    }

    pub async fn token(&self, user: &str) -> anyhow::Result<String> {
        self.token_as(user, "viewer").await
    }

    pub async fn token_as(&self, user: &str, role: &str) -> anyhow::Result<String> {
        let reply: Value = self
            .client
            .post(format!("{}/api/dev/token", self.http))
            .json(&json!({"user": user, "name": user, "role": role}))
            .send()
            .await?
            .error_for_status()
            .context("POST /api/dev/token (is the server in dev mode?)")?
            .json()
            .await?;
        reply["token"]
            .as_str()
            .map(str::to_owned)
            .context("no token in the reply")
    }

    /// An HTTP request to `path` on the target.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client.request(method, format!("{}{path}", self.http))
    }

    /// A gauge or counter from the server's `/metrics` (summed over its labels).
    pub async fn metric(&self, name: &str) -> anyhow::Result<f64> {
        let text = self
            .request(reqwest::Method::GET, "/metrics")
            .send()
            .await?
            .text()
            .await?;
        Ok(text
            .lines()
            .filter(|line| {
                line.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
            })
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum())
    }

    pub async fn connect(&self, token: &str) -> anyhow::Result<WebSocket> {
        WebSocket::connect(&self.address, &format!("/ws?token={token}")).await
    }

    pub async fn top_up(&self, token: &str, coins: u64, key: &str) -> anyhow::Result<()> {
        self.client
            .post(format!("{}/api/me/topup", self.http))
            .bearer_auth(token)
            .json(&json!({"coins": coins, "key": key}))
            .send()
            .await?
            .error_for_status()
            .context("POST /api/me/topup")?;
        Ok(())
    }

    /// The cheapest sticker of the catalog.
    pub async fn cheapest_sticker(&self) -> anyhow::Result<(String, u64)> {
        let catalog: Value = self
            .client
            .get(format!("{}/api/catalog", self.http))
            .send()
            .await?
            .json()
            .await?;
        catalog["stickers"]
            .as_array()
            .and_then(|stickers| {
                stickers
                    .iter()
                    .filter_map(|s| Some((s["id"].as_str()?.to_owned(), s["coins"].as_u64()?)))
                    .min_by_key(|(_, coins)| *coins)
            })
            .context("no stickers in /api/catalog")
    }
}

/// Joins `room` and returns the room's `seq` at the join.
pub async fn join(socket: &mut WebSocket, room: &str) -> anyhow::Result<u64> {
    let request = json!({"type": "join", "room": room, "rid": "join"}).to_string();
    socket.send_text(&request).await?;
    while let Some(text) = socket.next_text().await? {
        if text.contains("\"rid\":\"join\"") {
            let reply: Value = serde_json::from_str(&text)?;
            if reply["type"] != "ok" {
                bail!("join {room} refused: {reply}");
            }
            return reply["seq"].as_u64().context("join reply without seq");
        }
    }
    bail!("connection closed while joining {room}")
}

/// Makes this process SCHED_BATCH: it keeps its fair share of the CPU, but its
/// wake-ups no longer preempt a running server thread. Real clients do not run
/// on the server's cores; here every `sendto` of the server woke a tester
/// thread that took the core mid-sweep (10,000 viewers: p99 74–98 ms in 7 of 7
/// runs with it, 74–164 ms without, alternating).
pub fn yield_to_the_server() -> anyhow::Result<()> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: plain system call on this process with a valid parameter.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) } != 0 {
        bail!(
            "setting SCHED_BATCH: {} (use --normal-priority)",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// Raises this process's open-file limit as far as allowed, for thousands of sockets.
pub fn raise_open_files() -> u64 {
    rlimit::increase_nofile_limit(u64::MAX).unwrap_or(1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bases(cluster: &Cluster) -> Vec<&str> {
        cluster.nodes.iter().map(|n| n.http.as_str()).collect()
    }

    #[test]
    fn a_single_url_is_one_node() {
        let cluster = Cluster::parse("http://127.0.0.1:8080").expect("loopback");
        assert_eq!(bases(&cluster), ["http://127.0.0.1:8080"]);
        assert_eq!(cluster.nodes[0].address, "127.0.0.1:8080");
        assert!(cluster.single().is_some());
    }

    #[test]
    fn a_list_is_one_node_per_entry_in_order() {
        let cluster =
            Cluster::parse("http://127.0.0.1:8081, http://127.0.0.2:8082/,http://127.0.0.1")
                .expect("all loopback");
        assert_eq!(
            bases(&cluster),
            [
                "http://127.0.0.1:8081",
                "http://127.0.0.2:8082",
                "http://127.0.0.1:80"
            ]
        );
        assert!(cluster.single().is_none());
    }

    #[test]
    fn one_bad_entry_refuses_the_list() {
        for (urls, reason) in [
            (
                "http://127.0.0.1:8081,http://10.0.0.1:8082",
                "only targets loopback",
            ),
            (
                "http://127.0.0.1:8081,,http://127.0.0.1:8082",
                "empty entry",
            ),
            ("http://127.0.0.1:8081,", "empty entry"),
            (" ", "empty entry"),
            (
                "http://127.0.0.1:8081,ws://127.0.0.1:8082",
                "must be http://",
            ),
        ] {
            let refused = Cluster::parse(urls).err().map(|e| e.to_string());
            assert!(
                refused.as_deref().is_some_and(|e| e.contains(reason)),
                "{urls:?}: {refused:?}"
            );
        }
    }

    #[test]
    fn clients_go_round_robin() {
        let cluster =
            Cluster::parse("http://127.0.0.1:8081,http://127.0.0.1:8082,http://127.0.0.1:8083")
                .expect("all loopback");
        let ports: Vec<_> = (0..7)
            .map(|i| cluster.node(i).http.rsplit(':').next().unwrap_or_default())
            .collect();
        assert_eq!(
            ports,
            ["8081", "8082", "8083", "8081", "8082", "8083", "8081"]
        );
    }
}
