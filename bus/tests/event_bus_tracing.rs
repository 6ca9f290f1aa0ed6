//! The event bus's spans carry the event id: one `bus.publish` span per published event and
//! one `bus.handle` span per handled event, on the memory backend.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use bus::event_bus::{BusConfig, Event, EventBus, HandlerError, ReceivedEvent};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

type FieldMap = BTreeMap<String, String>;

/// Every span's name and its fields as text, including fields recorded after creation.
#[derive(Clone, Default)]
struct Capture {
    spans: Arc<Mutex<BTreeMap<u64, (String, FieldMap)>>>,
}

struct Fields<'a>(&'a mut FieldMap);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl<S: tracing::Subscriber> Layer<S> for Capture {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, _ctx: Context<'_, S>) {
        let mut fields = BTreeMap::new();
        attrs.record(&mut Fields(&mut fields));
        self.spans
            .lock()
            .unwrap()
            .insert(id.into_u64(), (attrs.metadata().name().to_owned(), fields));
    }
    fn on_record(&self, id: &Id, values: &Record<'_>, _ctx: Context<'_, S>) {
        if let Some((_, fields)) = self.spans.lock().unwrap().get_mut(&id.into_u64()) {
            values.record(&mut Fields(fields));
        }
    }
}

impl Capture {
    fn named(&self, name: &str) -> Vec<FieldMap> {
        self.spans
            .lock()
            .unwrap()
            .values()
            .filter(|(n, _)| n == name)
            .map(|(_, f)| f.clone())
            .collect()
    }
}

#[test]
fn publish_and_handle_spans_carry_the_event_id() {
    let capture = Capture::default();
    let subscriber = tracing_subscriber::registry().with(capture.clone());
    let _guard = tracing::subscriber::set_default(subscriber);
    // current_thread: every task runs on this thread, under the default subscriber.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (delivered, retried_id) = rt.block_on(async {
        let mut cfg = BusConfig::default();
        cfg.handlers.initial_backoff_ms = 1;
        cfg.handlers.max_backoff_ms = 2;
        let bus = EventBus::connect(cfg).await.unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let sub = bus
            .subscribe(&["player"], "traced", move |e: ReceivedEvent| {
                let tx = tx.clone();
                async move {
                    // The second event fails once, so its span ends with attempt 2.
                    if e.event.event_type == "Flaky" && e.attempt == 1 {
                        return Err(HandlerError::retriable("once"));
                    }
                    let _ = tx.send(e.event.id);
                    Ok(())
                }
            })
            .await
            .unwrap();
        let a = bus
            .publish("player", "p-7", Event::raw("Joined", "text/plain", "x"))
            .await
            .unwrap();
        let b = bus
            .publish("player", "p-7", Event::raw("Flaky", "text/plain", "y"))
            .await
            .unwrap();
        for _ in 0..2 {
            tokio::time::timeout(std::time::Duration::from_secs(10), rx.recv())
                .await
                .expect("handled in time")
                .unwrap();
        }
        sub.shutdown().await.unwrap();
        (vec![a, b.clone()], b.event_id)
    });

    let publish = capture.named("bus.publish");
    let handle = capture.named("bus.handle");
    for d in &delivered {
        let id = d.event_id.to_string();
        let p = publish
            .iter()
            .find(|f| f.get("event_id") == Some(&id))
            .unwrap_or_else(|| panic!("no publish span for {id}: {publish:?}"));
        assert_eq!(p["domain"], "player");
        assert_eq!(p["root"], "p-7");
        assert_eq!(p["topic"], &*d.topic);
        assert_eq!(p["partition"], d.partition.to_string());
        assert_eq!(
            p["offset"],
            d.offset
                .expect("memory backend assigns offsets")
                .to_string()
        );

        let h = handle
            .iter()
            .find(|f| f.get("event_id") == Some(&id))
            .unwrap_or_else(|| panic!("no handle span for {id}: {handle:?}"));
        assert_eq!(h["handler_group"], "traced");
        assert_eq!(h["topic"], &*d.topic);
        assert_eq!(h["partition"], d.partition.to_string());
        assert_eq!(
            h["offset"],
            d.offset
                .expect("memory backend assigns offsets")
                .to_string()
        );
        let attempts = if d.event_id == retried_id { "2" } else { "1" };
        assert_eq!(h["attempt"], attempts, "{h:?}");
    }
}
