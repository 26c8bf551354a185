//! [`KafkaCluster`]: three Apache Kafka nodes, each a controller and a broker, replication
//! factor 3 and `min.insync.replicas = 2`, for leader and coordinator failover drills; the
//! leader of any partition and the transaction or group coordinator of any id can be found
//! and SIGKILLed.

use super::*;

/// Three (or more) Apache Kafka nodes, each a controller and a broker, with default
/// replication factor 3 and `min.insync.replicas = 2` (for topics and the internal
/// offsets and transaction-state topics). Stopped when dropped.
#[derive(Debug)]
pub struct KafkaCluster {
    nodes: Vec<KafkaNode>,
}

impl KafkaCluster {
    /// Starts `size` nodes (at least 3) with their directories under `dir`, and waits until
    /// every broker is registered.
    pub fn start(size: usize, dir: &Path, options: KafkaOptions) -> Result<Self, BrokerError> {
        if size < 3 {
            return Err(BrokerError::Start(format!(
                "a cluster needs 3 nodes for replication factor 3, asked for {size}"
            )));
        }
        if options.advertised.is_some() || options.listen_port.is_some() {
            return Err(BrokerError::Start(
                "a cluster's nodes listen on free ports and advertise them".into(),
            ));
        }
        let voters: Vec<(u32, u16)> = (1..=size as u32)
            .map(|id| free_port().map(|port| (id, port)))
            .collect::<Result<_, _>>()?;
        let mut nodes = Vec::with_capacity(size);
        for (id, _) in &voters {
            nodes.push(KafkaNode::prepare(
                *id,
                &dir.join(format!("node{id}")),
                &voters,
                3,
                options.clone(),
            )?);
        }
        // The controllers need a quorum before any of them serves: launch all, then wait.
        for node in &mut nodes {
            node.launch()?;
        }
        let cluster = KafkaCluster { nodes };
        wait_for_brokers(&cluster.bootstrap(), size, Duration::from_secs(90))
            .map_err(|e| BrokerError::Start(format!("{e}\n{}", cluster.nodes[0].log_tail())))?;
        Ok(cluster)
    }

    /// Every node's advertised address, comma-separated, to bootstrap from.
    pub fn bootstrap(&self) -> String {
        self.nodes
            .iter()
            .map(KafkaNode::bootstrap)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The node with id `id` (1-based).
    pub fn node(&mut self, id: u32) -> Option<&mut KafkaNode> {
        self.nodes.iter_mut().find(|node| node.id == id)
    }

    /// The nodes.
    pub fn nodes(&self) -> &[KafkaNode] {
        &self.nodes
    }

    /// The id of the broker that leads `partition` of `topic` now, asked of a running node.
    pub fn leader_of(&self, topic: &str, partition: i32) -> Result<u32, BrokerError> {
        let bootstrap: Vec<&str> = self
            .nodes
            .iter()
            .filter(|node| node.is_running())
            .map(KafkaNode::bootstrap)
            .collect();
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap.join(","))
            .create()
            .map_err(|e| BrokerError::Start(e.to_string()))?;
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .map_err(|e| BrokerError::Start(format!("metadata of {topic}: {e}")))?;
        metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .and_then(|t| t.partitions().iter().find(|p| p.id() == partition))
            .and_then(|p| u32::try_from(p.leader()).ok())
            .ok_or_else(|| BrokerError::Start(format!("{topic}[{partition}] has no leader")))
    }

    /// The id of the broker that is the transaction coordinator of `transactional_id` now:
    /// the leader of its partition of `__transaction_state`.
    pub fn transaction_coordinator(&self, transactional_id: &str) -> Result<u32, BrokerError> {
        self.leader_of(
            "__transaction_state",
            coordinator_partition(transactional_id),
        )
    }

    /// The id of the broker that coordinates the consumer group `group` now: the leader of
    /// its partition of `__consumer_offsets`.
    pub fn group_coordinator(&self, group: &str) -> Result<u32, BrokerError> {
        self.leader_of("__consumer_offsets", coordinator_partition(group))
    }
}

/// The partition of an internal topic (8 partitions here) that holds `id`'s state: Java's
/// `String.hashCode` of it, made non-negative as Kafka's `Utils.abs` does, modulo 8.
pub(super) fn coordinator_partition(id: &str) -> i32 {
    let hash = id.encode_utf16().fold(0i32, |h, unit| {
        h.wrapping_mul(31).wrapping_add(i32::from(unit))
    });
    // Utils.abs maps i32::MIN to 0, not to itself.
    let non_negative = if hash == i32::MIN { 0 } else { hash.abs() };
    non_negative % INTERNAL_PARTITIONS
}
