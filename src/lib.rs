//! Ovation: a live-streaming gifting server. See `docs/architecture.md` for the map.

pub mod auth;
pub mod bus;
pub mod clock;
pub mod config;
pub mod gift;
pub mod http;
pub mod hub;
pub mod ids;
pub mod ledger;
pub mod metrics;
pub mod moderation;
pub mod money;
pub mod payments;
pub mod pk;
pub mod protocol;
pub mod relay;
mod serve;
pub mod webhooks;
pub mod ws;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Tokens;
use crate::bus::{Bus, RedisBus};
use crate::config::{Config, Limits};
use crate::gift::GiftEngine;
use crate::hub::{Cluster, Hub, Local, Moderation};
use crate::ledger::{Ledger, PostgresLedger, SqliteLedger, StorageFault};
use crate::moderation::BlockedTerms;
use crate::relay::Relay;
use crate::webhooks::Webhooks;

/// A running server. Dropping it does not stop it; call `shutdown` and `stopped`.
pub struct Server {
    addr: SocketAddr,
    relay: Arc<Relay>,
    shutdown: CancellationToken,
    fault: StorageFault,
    task: JoinHandle<anyhow::Result<()>>,
}

/// Where the static pages live unless the config says otherwise.
pub fn default_static_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("static")
}

/// Validates the config, binds the listener and starts serving in the background.
pub async fn start(config: Config) -> anyhow::Result<Server> {
    config.validate()?;
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data directory {}", config.data_dir.display()))?;
    let (file, limits) = (&config.file, config.file.limits.clone());
    let secret = match &config.token_secret {
        Some(secret) => secret.as_bytes().to_vec(),
        None => auth::dev_secret(&config.data_dir)?,
    };
    let fault = StorageFault::default();
    let gifts = Arc::new(open_gift_engine(&config, fault.clone()).await?);
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    let addr = listener.local_addr()?;
    let shutdown = CancellationToken::new();
    let webhooks = Arc::new(Webhooks::new(
        gifts.ledger().clone(),
        file.webhooks.clone(),
        config.clock.clone(),
    ));
    let (hub, mesh) = open_hub(
        &config,
        addr,
        gifts.ledger().clone(),
        webhooks.clone(),
        shutdown.clone(),
    )
    .await?;
    let mesh = mesh
        .map(|(bus, url)| relay::Mesh::new(bus, url, auth::NodeKey::derive(&secret)))
        .transpose()
        .context("starting the relay's client")?;
    let connections = TaskTracker::new();
    // Installed first: the pool reports its size as a metric.
    let metrics = metrics::install();
    let writers = ws::WriterPool::new().context("starting the writer threads")?;
    let live_rooms = hub.clone();
    let relay = Relay::new(
        config.listen,
        file.rtc.clone(),
        Box::new(move |room, live| live_rooms.set_live(room, live)),
        mesh,
    )
    .await
    .context("starting the WebRTC relay")?;
    tokio::spawn(relay.clone().report_loads(shutdown.clone()));
    let relay_handle = relay.clone();
    let state = http::AppState {
        hub: hub.clone(),
        gifts: gifts.clone(),
        relay: relay.clone(),
        tokens: Arc::new(Tokens::new(&secret, limits.token_leeway_s)),
        dev: config.dev,
        metrics,
        shutdown: shutdown.clone(),
        connections: connections.clone(),
        writers: writers.handle(),
        fault: fault.clone(),
        payments: Arc::new(
            payments::Payments::new(&file.payments, file.coin_packs.clone(), config.dev)
                .context("payments settings")?,
        ),
        webhooks: webhooks.clone(),
    };
    let grace = Limits::ms(limits.shutdown_grace_ms);
    let deliveries = webhooks
        .clone()
        .start(shutdown.clone(), grace)
        .context("starting the webhook worker")?;
    let drain = Limits::ms(file.ledger.fault_drain_ms);
    tokio::spawn(stop_on_fault(fault.clone(), drain, shutdown.clone()));
    let finishing = hub.clone();
    tokio::spawn(every(
        Limits::ms(LIKES_EVERY_MS),
        shutdown.clone(),
        hub.clone(),
        |hub| async move { hub.likes_tick().await },
    ));
    tokio::spawn(every(
        Limits::ms(file.pk.score_interval_ms),
        shutdown.clone(),
        hub.clone(),
        |hub| async move { hub.pk_tick().await },
    ));
    let ticks = tokio::spawn(tick(hub, gifts, limits.clone(), shutdown.clone()));
    let app = http::router(state, default_static_dir(), &file.http.cors_origins);
    let stop = shutdown.clone();
    let task = tokio::spawn(async move {
        serve::serve(
            listener,
            app,
            stop,
            Limits::ms(limits.http_header_timeout_ms),
            Limits::ms(limits.shutdown_grace_ms),
            limits.socket_send_buffer_bytes,
        )
        .await;
        close_connections(&relay, &connections, grace).await;
        finishing.finish(grace).await;
        // When `stopped` resolves nothing of this server holds the ledger any more, so
        // a new server may open the same data directory at once.
        deliveries.stopped(grace).await;
        let abort = ticks.abort_handle();
        if tokio::time::timeout(grace, ticks).await.is_err() {
            abort.abort();
        }
        drop(writers);
        Ok(())
    });
    Ok(Server {
        addr,
        relay: relay_handle,
        shutdown,
        fault,
        task,
    })
}

/// After the listener stopped: ends the WebRTC sessions and waits (up to `grace`)
/// for the WebSocket connections, which were told to close with 1001.
async fn close_connections(
    relay: &Arc<Relay>,
    connections: &TaskTracker,
    grace: std::time::Duration,
) {
    relay.close_all();
    connections.close();
    if tokio::time::timeout(grace, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!("some connections did not close within the shutdown grace period");
    }
}

/// The hub, on the cluster's bus when there is one; with the bus, this node's URL
/// for the relay.
async fn open_hub(
    config: &Config,
    addr: SocketAddr,
    ledger: Arc<dyn Ledger>,
    webhooks: Arc<Webhooks>,
    shutdown: CancellationToken,
) -> anyhow::Result<(Arc<Hub>, Option<(Arc<dyn Bus>, String)>)> {
    let limits = &config.file.limits;
    let battles = hub::Battles::new(ledger.clone(), config.file.pk.clone(), config.clock.clone());
    let moderation = Moderation {
        store: ledger,
        clock: config.clock.clone(),
        platform_terms: BlockedTerms::new(&config.file.moderation.blocked_terms)?,
    };
    let Some(settings) = &config.bus else {
        let hub = Hub::new(
            limits.clone(),
            Arc::new(Local::new()),
            moderation,
            webhooks,
            battles,
        );
        return Ok((Arc::new(hub), None));
    };
    let bus = RedisBus::connect(
        &settings.url,
        &settings.cluster,
        limits.history_len,
        3 * limits.presence_interval_ms,
    )
    .await
    .context("connecting to the Redis bus")?;
    let url = settings
        .node_url
        .clone()
        .unwrap_or_else(|| format!("http://{addr}"));
    let bus: Arc<dyn Bus> = Arc::new(bus);
    let (cluster, tasks) = Cluster::new(bus.clone(), url.clone());
    let cluster = Arc::new(cluster);
    let hub = Hub::new(
        limits.clone(),
        cluster.clone(),
        moderation,
        webhooks,
        battles,
    );
    let hub = Arc::new(hub);
    tasks.run(hub.clone(), cluster, shutdown);
    Ok((hub, Some((bus, url))))
}

/// The ledger (the shared PostgreSQL one, or the embedded SQLite file in the data
/// directory), and the engine over it.
async fn open_gift_engine(config: &Config, fault: StorageFault) -> anyhow::Result<GiftEngine> {
    let ledger: Arc<dyn Ledger> = match &config.ledger {
        Some(url) => Arc::new(
            PostgresLedger::open(url, fault, config.clock.clone())
                .await
                .context("opening the PostgreSQL ledger")?,
        ),
        None => Arc::new(
            SqliteLedger::open(
                &config.data_dir,
                &config.file.ledger,
                fault,
                config.clock.clone(),
            )
            .with_context(|| format!("opening the ledger in {}", config.data_dir.display()))?,
        ),
    };
    let file = &config.file;
    let engine = GiftEngine::open(
        ledger,
        file.catalog.clone(),
        file.split.clone(),
        file.gifts.clone(),
        config.clock.clone(),
    )
    .await
    .context("loading wallets from the ledger")?;
    let limits = &file.limits;
    let caps = gift::SpendingCaps::new(limits.max_coins_per_charge, limits.daily_coins);
    Ok(engine.with_caps(caps).with_payouts(&file.payouts))
}

/// Crash-only money: after a storage fault, and `drain` for load balancers to see
/// `/healthz` fail, the server stops (and `Server::stopped` answers the fault), so that
/// its supervisor restarts it from what is on disk.
async fn stop_on_fault(
    fault: StorageFault,
    drain: std::time::Duration,
    shutdown: CancellationToken,
) {
    tokio::select! {
        _ = fault.tripped() => {
            tracing::error!(?drain, "stopping after a ledger storage fault");
            tokio::select! {
                _ = tokio::time::sleep(drain) => {}
                _ = shutdown.cancelled() => {}
            }
            shutdown.cancel();
        }
        _ = shutdown.cancelled() => {}
    }
}

/// Periodic work until shutdown: presence, freeing rooms, coalesced leaderboards,
/// refunds of expired red packets.
/// How often rooms' likes are counted and announced.
const LIKES_EVERY_MS: u64 = 1000;

/// Runs `work` on `hub` every `period` until `shutdown`.
async fn every<F, Fut>(
    period: std::time::Duration,
    shutdown: CancellationToken,
    hub: Arc<Hub>,
    work: F,
) where
    F: Fn(Arc<Hub>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => work(hub.clone()).await,
        }
    }
}

async fn tick(hub: Arc<Hub>, gifts: Arc<GiftEngine>, limits: Limits, shutdown: CancellationToken) {
    let mut every = tokio::time::interval(Limits::ms(limits.presence_interval_ms));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = every.tick() => {
                hub.sequencer_tick().await;
                hub.tick(Instant::now());
                gifts.expire_combos();
                for refund in gifts.refund_expired(ids::unix_ms()).await {
                    let frame = protocol::to_json(&protocol::EphemeralEvent::Balance { coins: refund.balance, debt: gifts.debt(&refund.sender) });
                    hub.send_to_user(&refund.sender, frame.into());
                }
            }
        }
    }
}

impl Server {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The WebRTC relay, to follow its sessions (`Relay::census`).
    pub fn relay(&self) -> &Arc<Relay> {
        &self.relay
    }

    /// Starts a graceful shutdown: stop accepting, close sockets with 1001, finish work.
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Resolves when the server starts shutting down: asked to, or by itself after a
    /// ledger storage fault.
    pub async fn stopping(&self) {
        self.shutdown.cancelled().await
    }

    /// Waits until the server has stopped; an error if it stopped on a storage fault.
    pub async fn stopped(self) -> anyhow::Result<()> {
        self.task.await.context("server task panicked")??;
        match self.fault.reason() {
            Some(reason) => anyhow::bail!("stopped after a ledger storage fault: {reason}"),
            None => Ok(()),
        }
    }
}
