//! The event bus's metrics, rendered as Prometheus text (its own test binary: the recorder is
//! process-global).

use std::time::Duration;

use bus::event_bus::{Event, EventBus, HandlerError, ReceivedEvent};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_handle_retry_and_dead_letter_are_counted() {
    let handle = bus::event_bus::metrics::install_prometheus().unwrap();
    let mut cfg = integration_tests::event_bus_suite::test_config();
    cfg.handlers.max_attempts = 2;
    let bus = EventBus::connect(cfg).await.unwrap();
    let sub = bus
        .subscribe(&["player"], "metered", |e: ReceivedEvent| async move {
            if e.event.event_type == "Poison" {
                return Err(HandlerError::retriable("no"));
            }
            Ok(())
        })
        .await
        .unwrap();
    let mut delivered = None;
    for t in ["Joined", "Joined", "Poison"] {
        let d = bus
            .publish("player", "p-1", Event::raw(t, "text/plain", "x"))
            .await
            .unwrap();
        delivered = Some(d);
    }
    let delivered = delivered.unwrap();
    // The aggregate's partition, fully consumed: its lag reaches 0.
    let lag_line = format!(
        "bus_consumer_lag{{group=\"metered\",topic=\"{}\",partition=\"{}\"}} 0\n",
        delivered.topic, delivered.partition
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let text = loop {
        let text = handle.render();
        if text.contains("bus_dead_letters_total") && text.contains(&lag_line) {
            break text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "metrics missing:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let value = |prefix: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
    };
    assert_eq!(
        value("bus_published_total{domain=\"player\",outcome=\"ok\"}"),
        3.0
    );
    assert_eq!(
        value("bus_handled_total{group=\"metered\",outcome=\"ok\"}"),
        2.0
    );
    assert_eq!(value("bus_dead_letters_total{group=\"metered\"}"), 1.0);
    assert_eq!(value("bus_retries_total{group=\"metered\"}"), 1.0);
    assert!(text.contains("# TYPE bus_consumer_lag gauge\n"), "{text}");
    assert!(text.contains("# HELP bus_published_total "), "{text}");
    assert_eq!(value("bus_publish_seconds_count{domain=\"player\"}"), 3.0);
    assert_eq!(
        value("bus_publish_seconds_bucket{domain=\"player\",le=\"+Inf\"}"),
        3.0
    );
    // Handler time is recorded for successful runs: the two Joined.
    assert_eq!(value("bus_handle_seconds_count{group=\"metered\"}"), 2.0);
    sub.shutdown().await.unwrap();
}
