//! The cluster client against the broker: bootstrap, metadata for a topic, routing to its
//! leader, reconnecting after a connection dies, and typed errors for what does not exist.

use std::time::Duration;

use bus::admin::create_topic_request;
use bus::{Client, ClientConfig, Error};
use integration_tests::{bootstrap, client, unique_topic};
use kafka_proto::messages::ListOffsetsRequest;
use kafka_proto::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};

#[tokio::test]
async fn learns_brokers_and_routes_to_partition_leaders() {
    let Some(addr) = bootstrap() else { return };
    let client = client(&addr).await;
    let md = client.metadata();
    assert!(
        !md.brokers.is_empty(),
        "bootstrap must load the broker list"
    );

    let topic = unique_topic("client-route");
    let created = client
        .send_to_controller(&create_topic_request(&topic, 3, 1))
        .await
        .unwrap();
    assert_eq!(created.topics[0].error_code, 0, "{:?}", created.topics[0]);

    let t = client.topic(&topic).await.unwrap();
    assert_eq!(t.partition_count(), 3);
    for p in 0..3 {
        let leader = client.leader(&topic, p).await.unwrap();
        assert!(client.metadata().brokers.contains_key(&leader));
        // A request routed to the leader is answered for that partition without error.
        let mut req = ListOffsetsRequest::default();
        req.replica_id = -1;
        let mut lt = ListOffsetsTopic::default();
        lt.name = topic.clone();
        let mut lp = ListOffsetsPartition::default();
        lp.partition_index = p;
        lp.timestamp = -1;
        lt.partitions.push(lp);
        req.topics.push(lt);
        let resp = client.send_to(leader, &req).await.unwrap();
        assert_eq!(resp.topics[0].partitions[0].error_code, 0);
    }
    let err = client.leader(&topic, 7).await.unwrap_err();
    assert!(
        matches!(err, Error::UnknownPartition { partition: 7, .. }),
        "{err}"
    );
}

#[tokio::test]
async fn a_dead_connection_is_replaced_on_next_use() {
    let Some(addr) = bootstrap() else { return };
    let client = client(&addr).await;
    let node = *client.metadata().brokers.keys().next().unwrap();
    let first = client.broker(node).await.unwrap();
    first.close();
    assert!(first.is_closed());
    let second = client.broker(node).await.unwrap();
    assert!(
        !second.same_as(&first),
        "a closed connection must not be handed out"
    );
    client.refresh_metadata().await.unwrap();
}

#[tokio::test]
async fn unknown_topic_is_a_typed_error_after_the_wait() {
    let Some(addr) = bootstrap() else { return };
    let client = Client::connect(
        ClientConfig::new([addr.as_str()]).metadata_wait(Duration::from_millis(300)),
    )
    .await
    .unwrap();
    let name = unique_topic("client-missing");
    let err = client.topic(&name).await.unwrap_err();
    assert!(
        matches!(&err, Error::UnknownTopic(t) if *t == name),
        "{err}"
    );
}

#[tokio::test]
async fn unreachable_bootstrap_fails_with_the_addresses_tried() {
    // A port nothing listens on: bind, read the port, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut cfg = ClientConfig::new([addr.as_str()]);
    cfg.metadata_retries = 1;
    let err = Client::connect(cfg).await.unwrap_err();
    match err {
        Error::NoBrokerReachable { tried, .. } => assert_eq!(tried, addr),
        other => panic!("{other}"),
    }
}

#[test]
fn bad_configuration_is_rejected_naming_the_option() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let err = rt
        .block_on(Client::connect(ClientConfig::new(["no-port"])))
        .unwrap_err();
    assert!(err.to_string().contains("bootstrap"), "{err}");
    let empty: [&str; 0] = [];
    let err = rt
        .block_on(Client::connect(ClientConfig::new(empty)))
        .unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err}");
}

#[tokio::test]
async fn invalidation_refreshes_in_the_background_and_an_idle_client_stays_quiet() {
    let Some(addr) = bootstrap() else { return };
    let client = client(&addr).await;
    let before = client.metadata();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        std::sync::Arc::ptr_eq(&before, &client.metadata()),
        "nothing asked for a refresh, so none should have run"
    );
    client.invalidate();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while std::sync::Arc::ptr_eq(&before, &client.metadata()) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "invalidate() did not lead to a refresh"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
