//! `kbus`: a command-line tool over the client. Today it speaks the admin basics; the event
//! bus commands (publish, consume, bench) arrive with the bus layer.
//!
//! ```text
//! kbus [--bootstrap HOST:PORT] api-versions
//! kbus [--bootstrap HOST:PORT] metadata [TOPIC...]
//! kbus [--bootstrap HOST:PORT] create-topic NAME [PARTITIONS]
//! kbus [--bootstrap HOST:PORT] delete-topic NAME
//! ```
//! The bootstrap address defaults to `$KAFKA_BOOTSTRAP`, then `127.0.0.1:9092`.

use std::process::ExitCode;

use bus::admin::{create_topic_request, delete_topics_request};
use bus::{Connection, ConnectionConfig};
use kafka_proto::messages::metadata_request::MetadataRequestTopic;
use kafka_proto::messages::{DeleteTopicsRequest, MetadataRequest};
use kafka_proto::{ApiKey, ErrorCode};

const USAGE: &str = "usage: kbus [--bootstrap HOST:PORT] <api-versions | metadata [TOPIC...] | create-topic NAME [PARTITIONS] | delete-topic NAME>";

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match run(std::env::args().skip(1).collect()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kbus: {e}");
            ExitCode::FAILURE
        }
    }
}

fn check(code: i16, what: &str) -> Result<(), String> {
    match ErrorCode::from_code(code) {
        ErrorCode::None => Ok(()),
        e => Err(format!("{what}: {e}")),
    }
}

async fn run(mut args: Vec<String>) -> Result<(), String> {
    let mut bootstrap =
        std::env::var("KAFKA_BOOTSTRAP").unwrap_or_else(|_| "127.0.0.1:9092".into());
    if args.first().map(String::as_str) == Some("--bootstrap") {
        if args.len() < 2 {
            return Err(USAGE.into());
        }
        bootstrap = args.remove(1);
        args.remove(0);
    }
    let Some(cmd) = args.first().cloned() else {
        return Err(USAGE.into());
    };
    let conn = Connection::connect(&bootstrap, ConnectionConfig::default())
        .await
        .map_err(|e| e.to_string())?;
    match cmd.as_str() {
        "api-versions" => {
            println!("{:<28} {:>9} {:>7}  will send", "API", "broker", "client");
            for api in ApiKey::ALL {
                let Some(b) = conn.broker_versions().get(*api) else {
                    continue;
                };
                let ours = api
                    .info()
                    .supported
                    .map(|r| format!("{}-{}", r.min, r.max))
                    .unwrap_or_else(|| "-".into());
                let send = conn
                    .broker_versions()
                    .negotiate(*api, None)
                    .map(|v| format!("v{v}"))
                    .unwrap_or_else(|_| "unsupported".into());
                println!(
                    "{:<28} {:>9} {:>7}  {send}",
                    api.info().name,
                    format!("{}-{}", b.min, b.max),
                    ours
                );
            }
        }
        "metadata" => {
            let mut req = MetadataRequest::default();
            if args.len() > 1 {
                req.topics = Some(
                    args[1..]
                        .iter()
                        .map(|t| {
                            let mut m = MetadataRequestTopic::default();
                            m.name = Some(t.clone());
                            m
                        })
                        .collect(),
                );
            }
            let resp = conn.send(&req).await.map_err(|e| e.to_string())?;
            println!("cluster {}", resp.cluster_id.as_deref().unwrap_or("?"));
            for b in &resp.brokers {
                println!("broker {} {}:{}", b.node_id, b.host, b.port);
            }
            for t in &resp.topics {
                let err = ErrorCode::from_code(t.error_code);
                println!(
                    "topic {} partitions={} {}",
                    t.name.as_deref().unwrap_or("?"),
                    t.partitions.len(),
                    if err.is_ok() {
                        String::new()
                    } else {
                        err.to_string()
                    }
                );
            }
        }
        "create-topic" => {
            let name = args.get(1).ok_or(USAGE)?;
            let partitions = args
                .get(2)
                .map(|p| p.parse::<i32>().map_err(|e| format!("partitions: {e}")))
                .transpose()?
                .unwrap_or(1);
            let req = create_topic_request(name, partitions, 1);
            let resp = conn.send(&req).await.map_err(|e| e.to_string())?;
            for t in &resp.topics {
                check(t.error_code, &t.name)?;
                println!("created {} ({partitions} partitions)", t.name);
            }
        }
        "delete-topic" => {
            let name = args.get(1).ok_or(USAGE)?;
            let version = conn
                .version_for::<DeleteTopicsRequest>()
                .map_err(|e| e.to_string())?;
            let req = delete_topics_request(&[name], version);
            let resp = conn.send(&req).await.map_err(|e| e.to_string())?;
            for r in &resp.responses {
                check(r.error_code, name)?;
                println!("deleted {name}");
            }
        }
        _ => return Err(USAGE.into()),
    }
    Ok(())
}
