//! The event bus in one file: publishes player and hand events, runs two handler groups that
//! each see every event, and exits once both have caught up.
//!
//! ```text
//! cargo run -p bus --example quickstart                              # in process, no broker
//! KAFKA_BROKERS=localhost:9092 cargo run -p bus --example quickstart  # on Kafka
//! ```
//!
//! `bus/tests/quickstart.rs` runs [`run`] on both backends, so this file stays working.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bus::event_bus::{
    BackendKind, BusConfig, ConfigError, ENV_BACKEND, ENV_BROKERS, EventBus, HandlerError,
    ReceivedEvent,
};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Debug)]
#[serde(tag = "type")]
enum PlayerEvent {
    Joined { name: String },
    ChipsBought { amount: u32 },
}

#[derive(Serialize, Deserialize, Debug)]
#[serde(tag = "type")]
enum HandEvent {
    Dealt { players: Vec<String> },
    Won { winner: String, pot: u32 },
}

type Error = Box<dyn std::error::Error + Send + Sync>;

/// Defaults plus the environment (`get` reads a variable). Memory unless `KAFKA_BROKERS` is
/// set; an explicit `BUS_BACKEND` wins either way (`BUS_BACKEND=memory` with brokers set
/// still runs in process).
pub fn config_from(get: impl Fn(&str) -> Option<String>) -> Result<BusConfig, ConfigError> {
    let mut config = BusConfig::default();
    config.apply_env(&get)?;
    if get(ENV_BROKERS).is_some() && get(ENV_BACKEND).is_none() {
        config.backend = BackendKind::Kafka;
    }
    config.validate_in("environment")?;
    Ok(config)
}

/// What one run saw.
#[derive(Debug)]
pub struct Report {
    pub backend: BackendKind,
    /// `root:type` of each event, in the order each group handled them.
    pub player_projector: Vec<String>,
    pub output_projector: Vec<String>,
}

/// Subscribes the two groups, publishes six events, waits (up to a minute) until both groups
/// have handled all they should, and shuts everything down.
pub async fn run(config: BusConfig) -> Result<Report, Error> {
    let bus = EventBus::connect(config).await?;
    let backend = bus.config().backend;
    println!("backend: {backend:?}");

    // Two handler groups: each is its own consumer group and sees every event.
    let player_seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let s = player_seen.clone();
    let players = bus
        .subscribe(&["player"], "player-projector", move |e: ReceivedEvent| {
            let s = s.clone();
            async move {
                let ev: PlayerEvent = e.event.decode_json()?;
                println!(
                    "[player-projector] {}/{} #{}: {ev:?}",
                    e.domain, e.root, e.offset
                );
                s.lock()
                    .unwrap()
                    .push(format!("{}:{}", e.root, e.event.event_type));
                Ok::<_, HandlerError>(())
            }
        })
        .await?;
    let output_seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let s = output_seen.clone();
    let output = bus
        .subscribe(
            &["player", "hand"],
            "output-projector",
            move |e: ReceivedEvent| {
                let s = s.clone();
                async move {
                    println!(
                        "[output-projector] {} {}/{} ({} bytes, id {})",
                        e.event.event_type,
                        e.domain,
                        e.root,
                        e.event.payload.len(),
                        e.event.id
                    );
                    s.lock()
                        .unwrap()
                        .push(format!("{}:{}", e.root, e.event.event_type));
                    Ok::<_, HandlerError>(())
                }
            },
        )
        .await?;

    for name in ["ann", "bob"] {
        bus.publish_json(
            "player",
            name,
            "Joined",
            &PlayerEvent::Joined { name: name.into() },
        )
        .await?;
        bus.publish_json(
            "player",
            name,
            "ChipsBought",
            &PlayerEvent::ChipsBought { amount: 100 },
        )
        .await?;
    }
    bus.publish_json(
        "hand",
        "h-1",
        "Dealt",
        &HandEvent::Dealt {
            players: vec!["ann".into(), "bob".into()],
        },
    )
    .await?;
    bus.publish_json(
        "hand",
        "h-1",
        "Won",
        &HandEvent::Won {
            winner: "ann".into(),
            pot: 40,
        },
    )
    .await?;

    // player-projector sees the 4 player events; output-projector sees all 6.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while (player_seen.lock().unwrap().len() < 4 || output_seen.lock().unwrap().len() < 6)
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    players.shutdown().await?;
    output.shutdown().await?;
    bus.close().await?;
    let report = Report {
        backend,
        player_projector: player_seen.lock().unwrap().clone(),
        output_projector: output_seen.lock().unwrap().clone(),
    };
    Ok(report)
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let report = run(config_from(|k| std::env::var(k).ok())?).await?;
    let handled = report.player_projector.len() + report.output_projector.len();
    println!("handled {handled} of 10 deliveries");
    if handled < 10 {
        return Err("handlers did not catch up within 60 s".into());
    }
    Ok(())
}
