//! Describing and changing configs (DescribeConfigs, IncrementalAlterConfigs).
//!
//! Changes use IncrementalAlterConfigs (KIP-339) only: the older AlterConfigs replaces a
//! resource's whole config set, so a client that changes one key silently resets every other
//! dynamic key it did not repeat. Broker-scoped resources must be sent to that broker; topic
//! resources may go to any broker.

use std::collections::BTreeMap;

use kafka_proto::messages::describe_configs_request::DescribeConfigsResource;
use kafka_proto::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_proto::messages::{DescribeConfigsRequest, IncrementalAlterConfigsRequest};

use super::Admin;
use crate::client::check_code;
use crate::error::Error;
use crate::routing::{send_versioned, send_versioned_on};

/// Something that has configs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ConfigResource {
    Topic(String),
    /// One broker's configs, by node id. Sent to that broker.
    Broker(i32),
    /// One broker's log levels (KIP-412). Sent to that broker.
    BrokerLogger(i32),
}

impl ConfigResource {
    /// Kafka's resource type id and the resource name as the wire carries them.
    fn wire(&self) -> (i8, String) {
        match self {
            ConfigResource::Topic(t) => (2, t.clone()),
            ConfigResource::Broker(id) => (4, id.to_string()),
            ConfigResource::BrokerLogger(id) => (8, id.to_string()),
        }
    }

    /// The broker the request must go to, if any broker will not do.
    fn node(&self) -> Option<i32> {
        match self {
            ConfigResource::Topic(_) => None,
            ConfigResource::Broker(id) | ConfigResource::BrokerLogger(id) => Some(*id),
        }
    }

    fn context(&self) -> String {
        match self {
            ConfigResource::Topic(t) => format!("topic {t}"),
            ConfigResource::Broker(id) => format!("broker {id}"),
            ConfigResource::BrokerLogger(id) => format!("broker logger {id}"),
        }
    }
}

/// Where a config's value comes from (DescribeConfigs v1+).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ConfigSource {
    /// Set on the topic itself.
    DynamicTopic,
    /// Set dynamically for this broker.
    DynamicBroker,
    /// Set dynamically as the default for every broker.
    DynamicDefaultBroker,
    /// From the broker's properties file.
    StaticBroker,
    /// Kafka's built-in default.
    Default,
    DynamicBrokerLogger,
    ClientMetrics,
    Group,
    /// A source this client does not know, or none reported (v0 brokers).
    Unknown(i8),
}

impl ConfigSource {
    pub(crate) fn from_wire(id: i8) -> ConfigSource {
        match id {
            1 => ConfigSource::DynamicTopic,
            2 => ConfigSource::DynamicBroker,
            3 => ConfigSource::DynamicDefaultBroker,
            4 => ConfigSource::StaticBroker,
            5 => ConfigSource::Default,
            6 => ConfigSource::DynamicBrokerLogger,
            7 => ConfigSource::ClientMetrics,
            8 => ConfigSource::Group,
            other => ConfigSource::Unknown(other),
        }
    }
}

/// One config value a synonym of the entry supplies (a broker default behind a topic key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigSynonym {
    pub name: String,
    pub value: Option<String>,
    pub source: ConfigSource,
}

/// One config of a resource.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConfigEntry {
    pub name: String,
    /// `None` for sensitive values and for keys without a value.
    pub value: Option<String>,
    pub source: ConfigSource,
    pub read_only: bool,
    pub sensitive: bool,
    /// Lower-precedence values of the same setting, highest first (DescribeConfigs v1+).
    pub synonyms: Vec<ConfigSynonym>,
}

impl ConfigEntry {
    /// Whether the value is Kafka's or the broker's default rather than set on purpose.
    pub fn is_default(&self) -> bool {
        matches!(
            self.source,
            ConfigSource::Default | ConfigSource::StaticBroker
        )
    }
}

/// One change of IncrementalAlterConfigs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlterConfigOp {
    /// Sets the key to the value.
    Set(String, String),
    /// Removes the key, so the next level's default applies again.
    Delete(String),
    /// Adds values to a list-valued key (`cleanup.policy=compact,delete`).
    Append(String, String),
    /// Removes values from a list-valued key.
    Subtract(String, String),
}

impl AlterConfigOp {
    fn to_request(&self) -> AlterableConfig {
        let (name, op, value) = match self {
            AlterConfigOp::Set(k, v) => (k, 0, Some(v)),
            AlterConfigOp::Delete(k) => (k, 1, None),
            AlterConfigOp::Append(k, v) => (k, 2, Some(v)),
            AlterConfigOp::Subtract(k, v) => (k, 3, Some(v)),
        };
        let mut c = AlterableConfig::default();
        c.name = name.clone();
        c.config_operation = op;
        c.value = value.cloned();
        c
    }
}

impl Admin {
    /// The configs of each resource (all keys, with synonyms). Topic resources share one
    /// request to any broker; each broker resource goes to its broker.
    pub async fn describe_configs(
        &self,
        resources: &[ConfigResource],
    ) -> Result<Vec<(ConfigResource, Result<Vec<ConfigEntry>, Error>)>, Error> {
        let mut by_node: BTreeMap<Option<i32>, Vec<&ConfigResource>> = BTreeMap::new();
        for r in resources {
            by_node.entry(r.node()).or_default().push(r);
        }
        let mut answers = Vec::with_capacity(resources.len());
        for (node, group) in by_node {
            let group = &group;
            let resp = self
                .retrying(|| async move {
                    let build = |version: i16| {
                        let mut req = DescribeConfigsRequest::default();
                        req.include_synonyms = version >= 1;
                        for r in group {
                            let (resource_type, resource_name) = r.wire();
                            let mut d = DescribeConfigsResource::default();
                            d.resource_type = resource_type;
                            d.resource_name = resource_name;
                            d.configuration_keys = None;
                            req.resources.push(d);
                        }
                        Ok(req)
                    };
                    match node {
                        Some(id) => send_versioned(&self.client, id, build).await,
                        None => {
                            let conn = self.client.any_broker().await?;
                            send_versioned_on(&self.client, &conn, build).await
                        }
                    }
                })
                .await?;
            for r in group {
                let r = *r;
                let (resource_type, resource_name) = r.wire();
                let result =
                    match resp.results.iter().find(|x| {
                        x.resource_type == resource_type && x.resource_name == resource_name
                    }) {
                        None => Err(Error::Protocol(format!("no answer for {}", r.context()))),
                        Some(x) => {
                            check_code(x.error_code, x.error_message.as_deref(), &r.context()).map(
                                |()| {
                                    x.configs
                                        .iter()
                                        .map(|c| ConfigEntry {
                                            name: c.name.clone(),
                                            value: c.value.clone(),
                                            // v0 has no source, only is_default.
                                            source: if c.config_source < 0 && c.is_default {
                                                ConfigSource::Default
                                            } else {
                                                ConfigSource::from_wire(c.config_source)
                                            },
                                            read_only: c.read_only,
                                            sensitive: c.is_sensitive,
                                            synonyms: c
                                                .synonyms
                                                .iter()
                                                .map(|s| ConfigSynonym {
                                                    name: s.name.clone(),
                                                    value: s.value.clone(),
                                                    source: ConfigSource::from_wire(s.source),
                                                })
                                                .collect(),
                                        })
                                        .collect()
                                },
                            )
                        }
                    };
                answers.push((r.clone(), result));
            }
        }
        Ok(answers)
    }

    /// The configs of one resource, as a map from key to entry.
    pub async fn describe_config(
        &self,
        resource: ConfigResource,
    ) -> Result<BTreeMap<String, ConfigEntry>, Error> {
        let entries = self
            .describe_configs(std::slice::from_ref(&resource))
            .await?
            .pop()
            .map(|(_, r)| r)
            .unwrap_or_else(|| {
                Err(Error::Protocol(format!(
                    "no answer for {}",
                    resource.context()
                )))
            })?;
        Ok(entries.into_iter().map(|e| (e.name.clone(), e)).collect())
    }

    /// Applies `ops` to `resource` atomically (IncrementalAlterConfigs): keys not named keep
    /// their values. With `validate_only` the broker checks the change without applying it.
    pub async fn alter_configs(
        &self,
        resource: &ConfigResource,
        ops: &[AlterConfigOp],
        validate_only: bool,
    ) -> Result<(), Error> {
        let (resource_type, resource_name) = resource.wire();
        let resource_name = &resource_name;
        let resp = self
            .retrying(|| async move {
                let build = |_version: i16| {
                    let mut r = AlterConfigsResource::default();
                    r.resource_type = resource_type;
                    r.resource_name = resource_name.clone();
                    r.configs = ops.iter().map(AlterConfigOp::to_request).collect();
                    let mut req = IncrementalAlterConfigsRequest::default();
                    req.validate_only = validate_only;
                    req.resources.push(r);
                    Ok(req)
                };
                match resource.node() {
                    Some(id) => send_versioned(&self.client, id, build).await,
                    None => {
                        let conn = self.client.any_broker().await?;
                        send_versioned_on(&self.client, &conn, build).await
                    }
                }
            })
            .await?;
        let r = resp
            .responses
            .iter()
            .find(|r| r.resource_type == resource_type && r.resource_name == *resource_name)
            .ok_or_else(|| Error::Protocol(format!("no answer for {}", resource.context())))?;
        check_code(
            r.error_code,
            r.error_message.as_deref(),
            &resource.context(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_and_operations_use_kafkas_ids() {
        assert_eq!(ConfigResource::Topic("t".into()).wire(), (2, "t".into()));
        assert_eq!(ConfigResource::Broker(3).wire(), (4, "3".into()));
        assert_eq!(ConfigResource::BrokerLogger(3).wire(), (8, "3".into()));
        assert_eq!(ConfigResource::Broker(3).node(), Some(3));
        assert_eq!(ConfigResource::Topic("t".into()).node(), None);

        let ops = [
            AlterConfigOp::Set("retention.ms".into(), "1000".into()),
            AlterConfigOp::Delete("segment.ms".into()),
            AlterConfigOp::Append("cleanup.policy".into(), "compact".into()),
            AlterConfigOp::Subtract("cleanup.policy".into(), "delete".into()),
        ];
        let wire: Vec<_> = ops
            .iter()
            .map(|o| {
                let c = o.to_request();
                (c.config_operation, c.value)
            })
            .collect();
        assert_eq!(
            wire,
            [
                (0, Some("1000".into())),
                (1, None),
                (2, Some("compact".into())),
                (3, Some("delete".into()))
            ]
        );
    }

    #[test]
    fn sources_map_from_the_wire() {
        assert_eq!(ConfigSource::from_wire(1), ConfigSource::DynamicTopic);
        assert_eq!(ConfigSource::from_wire(5), ConfigSource::Default);
        assert_eq!(ConfigSource::from_wire(-1), ConfigSource::Unknown(-1));
        assert_eq!(ConfigSource::from_wire(42), ConfigSource::Unknown(42));
    }
}
