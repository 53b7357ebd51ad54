//! The `ovation` command line.

// glibc's malloc was a large part of a gift storm's profile (consolidating freed
// chunks across threads; `docs/benchmarks.md`, "Why mimalloc"); mimalloc's
// per-thread free lists avoid that work.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use ovation::clock::Clock;
use ovation::config::{BusConfig, Config, FileConfig};

#[derive(Parser)]
#[command(
    name = "ovation",
    version,
    about = "Live-streaming gifting server",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default when no command is given).
    Serve(ServeArgs),
    /// Inspect the ledger (in a data directory, or the shared PostgreSQL one).
    Ledger {
        #[command(subcommand)]
        command: LedgerCommand,
    },
}

#[derive(Subcommand)]
enum LedgerCommand {
    /// Verify the books: every transfer balanced, all accounts sum to zero, no wallet
    /// below zero, one transfer per idempotency key. Exits 1 if anything is wrong.
    Check {
        /// Directory holding the ledger.
        #[arg(long, env = "OVATION_DATA_DIR", default_value = "./data")]
        data_dir: PathBuf,
        /// A PostgreSQL URL (postgres://user@host/db): check the ledger shared by the
        /// nodes of a cluster instead of the SQLite file in --data-dir.
        #[arg(long, env = "OVATION_LEDGER", hide_env_values = true)]
        ledger: Option<String>,
    },
}

/// Our own info logs; the WebRTC stack's only when something is wrong.
const DEFAULT_LOG: &str = "info,webrtc=warn,webrtc_ice=warn,webrtc_mdns=warn,webrtc_dtls=warn,\
    webrtc_srtp=warn,webrtc_sctp=warn,webrtc_data=warn,interceptor=warn";

#[derive(Args, Clone)]
struct ServeArgs {
    /// Address to listen on for HTTP, WebSocket, WHIP and WHEP.
    #[arg(long, env = "OVATION_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Directory for the ledger and other durable state.
    #[arg(long, env = "OVATION_DATA_DIR", default_value = "./data")]
    data_dir: PathBuf,
    /// HS256 secret shared with the backend that mints tokens (at least 16 bytes).
    /// Without it the server runs in dev mode.
    #[arg(long, env = "OVATION_TOKEN_SECRET", hide_env_values = true)]
    token_secret: Option<String>,
    /// Dev mode: POST /api/dev/token hands out tokens and POST /api/me/topup free coins.
    /// On by default when no secret is given; dev mode only listens on loopback.
    #[arg(long, env = "OVATION_DEV")]
    dev: bool,
    /// TOML file with limits and the rest (see docs/configuration.md).
    #[arg(long, env = "OVATION_CONFIG")]
    config: Option<PathBuf>,
    /// A PostgreSQL URL (postgres://user@host/db): the ledger shared by the nodes of a
    /// cluster. Without it the ledger is the embedded SQLite file in --data-dir.
    #[arg(long, env = "OVATION_LEDGER", hide_env_values = true)]
    ledger: Option<String>,
    /// A Redis URL (redis://host:port/): the bus that makes this node one of a cluster
    /// (rooms, presence and leaderboards shared). Use with --ledger.
    #[arg(long, env = "OVATION_BUS", hide_env_values = true, requires = "ledger")]
    bus: Option<String>,
    /// The cluster's name on the bus: nodes with the same name share rooms.
    #[arg(long, env = "OVATION_CLUSTER", default_value = "ovation")]
    cluster: String,
    /// This node's base URL for the other nodes' clients (WHEP viewers are redirected
    /// to the node hosting a room's video). Default: http:// and --listen.
    #[arg(long, env = "OVATION_NODE_URL")]
    node_url: Option<String>,
    /// The public IP of a server behind 1:1 NAT, announced in WebRTC ICE candidates
    /// instead of the local address (overrides `rtc.public_ip` of the config file).
    #[arg(long, env = "OVATION_PUBLIC_IP")]
    public_ip: Option<std::net::IpAddr>,
    /// Threads that read connections and run rooms (the async runtime's workers); as
    /// many again write to connections. Default: one per CPU core.
    #[arg(long, env = "OVATION_WORKERS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    workers: Option<u16>,
}

impl ServeArgs {
    fn into_config(self) -> anyhow::Result<Config> {
        let mut file = match &self.config {
            Some(path) => FileConfig::load(path)?,
            None => FileConfig::default(),
        };
        if let Some(ip) = self.public_ip {
            file.rtc.public_ip = Some(ip);
        }
        Ok(Config {
            listen: self.listen,
            data_dir: self.data_dir,
            dev: self.dev || self.token_secret.is_none(),
            token_secret: self.token_secret,
            ledger: self.ledger,
            bus: self.bus.map(|url| BusConfig {
                url,
                cluster: self.cluster,
                node_url: self.node_url,
            }),
            file,
            clock: ovation::clock::Clock::system(),
        })
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let logs = tracing_subscriber::fmt().with_env_filter(
        tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| DEFAULT_LOG.into()),
    );
    match cli.command {
        // Its stdout is the JSON report: logs (the database's notices) go to stderr.
        Some(Command::Ledger { .. }) => logs.with_writer(std::io::stderr).init(),
        _ => logs.init(),
    }
    match cli.command {
        None => serve(cli.serve),
        Some(Command::Serve(args)) => serve(args),
        Some(Command::Ledger {
            command: LedgerCommand::Check { data_dir, ledger },
        }) => check_ledger(&data_dir, ledger.as_deref()),
    }
}

/// Checks the PostgreSQL ledger at `url` if given, else the SQLite one in `data_dir`.
fn check_ledger(data_dir: &std::path::Path, url: Option<&str>) -> anyhow::Result<()> {
    use ovation::ledger::Ledger;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(async {
        // A check commits nothing, so nobody needs to hear of a storage fault here.
        let fault = ovation::ledger::StorageFault::default();
        let ledger: Box<dyn Ledger> = match url {
            // The URL may carry a password: the message names the flag, not the URL.
            Some(url) => Box::new(
                ovation::ledger::PostgresLedger::open(url, fault, Clock::system())
                    .await
                    .context("opening the PostgreSQL ledger given by --ledger")?,
            ),
            None => {
                let settings = ovation::ledger::LedgerSettings::default();
                Box::new(
                    ovation::ledger::SqliteLedger::open(
                        data_dir,
                        &settings,
                        fault,
                        Clock::system(),
                    )
                    .with_context(|| format!("opening the ledger in {}", data_dir.display()))?,
                )
            }
        };
        ledger.check().await.context("checking the ledger")
    })?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    if !report.ok {
        std::process::exit(1);
    }
    Ok(())
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let workers = args.workers;
    let config = args.into_config()?;
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(workers) = workers {
        runtime.worker_threads(workers.into());
    }
    let runtime = runtime
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let dev = config.dev;
        let server = ovation::start(config).await?;
        let stop = shutdown_signal();
        let url = format!("http://{}", server.addr());
        let ws = url.replacen("http", "ws", 1);
        say(&format!("Ovation is listening on {url}"));
        say(&format!("  open {url}/ to watch and chat"));
        say(&format!("  WebSocket {ws}/ws, metrics {url}/metrics"));
        if dev {
            say(&format!(
                "  dev mode: sign in from the page (tokens from POST {url}/api/dev/token)"
            ));
        }
        tokio::select! {
            _ = stop => say("shutting down: closing connections"),
            // A ledger storage fault: `stopped` answers it, and the process exits 1.
            _ = server.stopping() => {}
        }
        server.shutdown();
        server.stopped().await
    })
}

/// Prints a line for the operator. A closed stdout (a supervisor that stopped reading)
/// must not take the server down, so write errors are ignored.
fn say(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}

/// Resolves on the first SIGINT or SIGTERM. The handlers are installed when this is
/// called, not when it is first awaited: a supervisor may signal as soon as the URL
/// is printed, and until then SIGTERM would kill the process without closing its
/// connections.
#[cfg(unix)]
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt()).expect("installing the SIGINT handler");
    let mut terminate = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
    async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    }
}

#[cfg(not(unix))]
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}
