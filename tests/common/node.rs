//! Server processes for the scale-out tests: real `ovation` binaries on loopback
//! ports, sharing one PostgreSQL database (a fresh schema per test) and one Redis
//! (a fresh cluster name per test).

use std::io::{BufRead, BufReader};
use std::ops::Deref;
use std::process::{Child, Command, ExitStatus, Stdio};

use super::{Api, SECRET};

/// A schema of the test database (`OVATION_TEST_PG`), and the URL that uses it.
pub struct PgSchema {
    pub url: String,
    name: String,
}

impl PgSchema {
    /// A fresh schema; `None` (saying the test is skipped) when `OVATION_TEST_PG` is
    /// unset.
    pub async fn create(prefix: &str) -> Option<PgSchema> {
        let Ok(url) = std::env::var("OVATION_TEST_PG") else {
            eprintln!("SKIPPED: set OVATION_TEST_PG=postgres://... to run this test");
            return None;
        };
        let name = format!("ovation_{prefix}_{:016x}", unique());
        admin(&format!("CREATE SCHEMA {name}")).await;
        let separator = if url.contains('?') { '&' } else { '?' };
        Some(PgSchema {
            url: format!("{url}{separator}options=-csearch_path%3D{name}"),
            name,
        })
    }

    pub async fn drop(self) {
        admin(&format!("DROP SCHEMA {} CASCADE", self.name)).await;
    }
}

async fn admin(sql: &str) {
    let url = std::env::var("OVATION_TEST_PG").unwrap();
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client.batch_execute(sql).await.unwrap();
}

fn unique() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now())
}

/// What the nodes of one test share: a ledger schema and a cluster name on Redis.
pub struct Cluster {
    pub ledger: PgSchema,
    pub bus: String,
    pub name: String,
}

impl Cluster {
    /// `None` (saying the test is skipped) unless both `OVATION_TEST_PG` and
    /// `OVATION_TEST_REDIS` are set.
    pub async fn create() -> Option<Cluster> {
        let Ok(bus) = std::env::var("OVATION_TEST_REDIS") else {
            eprintln!("SKIPPED: set OVATION_TEST_REDIS=redis://... to run this test");
            return None;
        };
        Some(Cluster {
            ledger: PgSchema::create("cluster").await?,
            bus,
            name: format!("test-{:016x}", unique()),
        })
    }

    /// Starts a node of this cluster.
    pub fn node(&self) -> Node {
        self.node_with_config("")
    }

    /// Starts a node of this cluster with `toml` as its config file.
    pub fn node_with_config(&self, toml: &str) -> Node {
        let data_dir = tempfile::tempdir().unwrap();
        let config = data_dir.path().join("ovation.toml");
        std::fs::write(&config, toml).unwrap();
        let mut node = Node::spawn(&[
            "--data-dir",
            data_dir.path().to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
            "--ledger",
            &self.ledger.url,
            "--bus",
            &self.bus,
            "--cluster",
            &self.name,
        ]);
        node.data_dir = Some(data_dir);
        node
    }

    /// Cuts every connection `node` has to Redis, as a network blip would (found with
    /// `ss`, killed with `CLIENT KILL ADDR`).
    pub async fn cut_bus(&self, node: &Node) {
        let port = self.bus.trim_end_matches('/').rsplit(':').next().unwrap();
        let listing = Command::new("ss")
            .args(["-tnpH", "state", "established"])
            .arg(format!("( dport = :{port} )"))
            .output()
            .unwrap();
        let owner = format!("pid={},", node.pid());
        let client = redis::Client::open(self.bus.as_str()).unwrap();
        let mut redis = client.get_multiplexed_async_connection().await.unwrap();
        let mut cut = 0;
        for line in String::from_utf8_lossy(&listing.stdout).lines() {
            if let (true, Some(local)) = (line.contains(&owner), line.split_whitespace().nth(2)) {
                let killed: i64 = redis::cmd("CLIENT")
                    .arg(&["KILL", "ADDR", local, "SKIPME", "yes"])
                    .query_async(&mut redis)
                    .await
                    .unwrap();
                cut += killed;
            }
        }
        assert!(
            cut >= 2,
            "found {cut} bus connections of the node: {listing:?}"
        );
    }

    /// Drops the schema and the cluster's keys.
    pub async fn finish(self) {
        self.ledger.drop().await;
        let client = redis::Client::open(self.bus.as_str()).unwrap();
        let mut redis = client.get_multiplexed_async_connection().await.unwrap();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}:*", self.name))
            .query_async(&mut redis)
            .await
            .unwrap();
        if !keys.is_empty() {
            let _: () = redis::cmd("DEL")
                .arg(keys)
                .query_async(&mut redis)
                .await
                .unwrap();
        }
    }
}

/// An `ovation` process on a loopback port; killed when dropped.
pub struct Node {
    child: Child,
    api: Api,
    data_dir: Option<tempfile::TempDir>,
}

impl Node {
    /// Starts the binary in dev mode on an ephemeral port with `args` added; its log
    /// lines go to the test's output.
    pub fn spawn(args: &[&str]) -> Node {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ovation"))
            .args(["--listen", "127.0.0.1:0", "--dev", "--token-secret", SECRET])
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines.next().expect("the node printed its address").unwrap();
        let addr = first.rsplit("http://").next().unwrap().parse().unwrap();
        // Keep reading, so that a node that logs a lot never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                eprintln!("[node {addr}] {line}");
            }
        });
        Node {
            child,
            api: Api::new(addr),
            data_dir: None,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `kill -9`: no goodbye to anyone.
    pub fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, as an orchestrator drains a node; waits for it to exit.
    pub fn terminate(&mut self) -> ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        self.child.wait().unwrap()
    }
}

impl Deref for Node {
    type Target = Api;

    fn deref(&self) -> &Api {
        &self.api
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
