//! A throwaway `apache/kafka` broker in Docker, for hosts that have a Docker engine and would
//! rather test against real Kafka than tansu. Enabled by the `testcontainers` feature; used by
//! [`crate::bootstrap`] when `KAFKA_BOOTSTRAP` is unset.
//!
//! Kafka must advertise the address clients reach it on, which with Docker's random port
//! mapping is only known after start. So a free host port is picked first and mapped
//! explicitly, and the broker advertises `127.0.0.1:<that port>`.

use std::sync::OnceLock;

use testcontainers::core::{IntoContainerPort, WaitFor};
use testcontainers::runners::SyncRunner;
use testcontainers::{Container, GenericImage, ImageExt};

/// The image tag tested with; override with `KAFKA_IMAGE_TAG`.
const DEFAULT_TAG: &str = "3.9.0";

struct Running {
    // Kept alive for the whole test process; dropping it removes the container.
    _container: Container<GenericImage>,
    bootstrap: String,
}

static KAFKA: OnceLock<Result<Running, String>> = OnceLock::new();

fn start() -> Result<Running, String> {
    let port = crate::free_port();
    let tag = std::env::var("KAFKA_IMAGE_TAG").unwrap_or_else(|_| DEFAULT_TAG.into());
    let container = GenericImage::new("apache/kafka", &tag)
        .with_exposed_port(9092.tcp())
        .with_wait_for(WaitFor::message_on_stdout("Kafka Server started"))
        .with_env_var("KAFKA_NODE_ID", "1")
        .with_env_var("KAFKA_PROCESS_ROLES", "broker,controller")
        .with_env_var("KAFKA_LISTENERS", "PLAINTEXT://:9092,CONTROLLER://:9093")
        .with_env_var(
            "KAFKA_ADVERTISED_LISTENERS",
            format!("PLAINTEXT://127.0.0.1:{port}"),
        )
        .with_env_var("KAFKA_CONTROLLER_LISTENER_NAMES", "CONTROLLER")
        .with_env_var(
            "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP",
            "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        )
        .with_env_var("KAFKA_CONTROLLER_QUORUM_VOTERS", "1@localhost:9093")
        .with_env_var("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "1")
        .with_env_var("KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", "1")
        .with_env_var("KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", "1")
        .with_env_var("KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS", "0")
        .with_mapped_port(port, 9092.tcp())
        .start()
        .map_err(|e| format!("starting apache/kafka:{tag}: {e}"))?;
    Ok(Running {
        _container: container,
        bootstrap: format!("127.0.0.1:{port}"),
    })
}

/// The address of a Kafka container started once per test process.
pub fn kafka_bootstrap() -> Result<String, String> {
    KAFKA
        .get_or_init(start)
        .as_ref()
        .map(|r| r.bootstrap.clone())
        .map_err(Clone::clone)
}
