//! The event bus in one file: publishes player and hand events, runs two handler groups that
//! each see every event, and exits once both have caught up.
//!
//! ```text
//! cargo run -p bus --example quickstart                              # in process, no broker
//! KAFKA_BROKERS=localhost:9092 cargo run -p bus --example quickstart  # on Kafka
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bus::event_bus::{BackendKind, BusConfig, EventBus, HandlerError, ReceivedEvent};
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

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Memory by default; KAFKA_BROKERS (and BUS_BACKEND, KAFKA_TOPIC_PREFIX, ...) switch it.
    let mut config = BusConfig::from_env()?;
    if std::env::var_os("KAFKA_BROKERS").is_some() {
        config.backend = BackendKind::Kafka;
    }
    let bus = EventBus::connect(config).await?;
    println!("backend: {:?}", bus.config().backend);

    // Two handler groups: each is its own consumer group and sees every event.
    let seen = Arc::new(AtomicUsize::new(0));
    let s = seen.clone();
    let players = bus
        .subscribe(&["player"], "player-projector", move |e: ReceivedEvent| {
            let s = s.clone();
            async move {
                let ev: PlayerEvent = e.event.decode_json()?;
                println!(
                    "[player-projector] {}/{} #{}: {ev:?}",
                    e.domain, e.root, e.offset
                );
                s.fetch_add(1, Ordering::SeqCst);
                Ok::<_, HandlerError>(())
            }
        })
        .await?;
    let s = seen.clone();
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
                    s.fetch_add(1, Ordering::SeqCst);
                    Ok::<_, HandlerError>(())
                }
            },
        )
        .await?;

    let mut published = 0;
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
        published += 2;
    }
    let players_list = vec!["ann".to_string(), "bob".to_string()];
    bus.publish_json(
        "hand",
        "h-1",
        "Dealt",
        &HandEvent::Dealt {
            players: players_list,
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
    let expected = published + (published + 2);

    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while seen.load(Ordering::SeqCst) < expected && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    players.shutdown().await?;
    output.shutdown().await?;
    bus.close().await?;
    let handled = seen.load(Ordering::SeqCst);
    println!("handled {handled} of {expected} deliveries");
    if handled < expected {
        return Err("handlers did not catch up within 60 s".into());
    }
    Ok(())
}
