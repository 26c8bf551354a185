//! The last offset the brokers acknowledged per topic partition, from the producer's
//! delivery reports.
//!
//! [`crate::pipeline::Pipeline::wait_caught_up`] needs to know how far a consumer must read
//! to have seen everything this producer wrote. Asking the brokers for end offsets misses a
//! topic created a moment ago (metadata reaches a new client later than records reach the
//! topic); the delivery reports cannot miss it, because each one names the topic, the
//! partition and the offset of a record the broker has stored.
//!
//! The callback runs on librdkafka's delivery thread for every record, so the table is a
//! map from topic name to a vector indexed by partition: a lookup by `&str` and one store,
//! no allocation except for the first record of a topic.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

/// Per topic and partition, the offset of the last acknowledged record.
#[derive(Debug, Default)]
pub struct DeliveredOffsets(Mutex<HashMap<String, Vec<Option<i64>>>>);

impl DeliveredOffsets {
    /// Notes that the broker stored a record of `topic`/`partition` at `offset`.
    pub fn record(&self, topic: &str, partition: i32, offset: i64) {
        let Ok(index) = usize::try_from(partition) else {
            return;
        };
        let note = |partitions: &mut Vec<Option<i64>>| {
            if partitions.len() <= index {
                partitions.resize(index + 1, None);
            }
            let last = &mut partitions[index];
            *last = Some(last.map_or(offset, |seen| seen.max(offset)));
        };
        let mut topics = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        // One lookup for every record but a topic's first.
        match topics.get_mut(topic) {
            Some(partitions) => note(partitions),
            None => {
                let mut partitions = Vec::new();
                note(&mut partitions);
                topics.insert(topic.to_owned(), partitions);
            }
        }
    }

    /// `(topic, partition, next offset)` for every partition that has an acknowledged
    /// record: a consumer that stored `next` has read everything acknowledged so far.
    pub fn next_offsets(&self) -> Vec<(String, i32, i64)> {
        let topics = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let mut next = Vec::new();
        for (topic, partitions) in topics.iter() {
            for (partition, last) in partitions.iter().enumerate() {
                if let (Some(last), Ok(partition)) = (last, i32::try_from(partition)) {
                    next.push((topic.clone(), partition, last + 1));
                }
            }
        }
        next.sort();
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_highest_offset_per_partition() {
        let delivered = DeliveredOffsets::default();
        delivered.record("shop.public.items", 2, 7);
        delivered.record("shop.public.items", 2, 5);
        delivered.record("shop.public.items", 0, 0);
        delivered.record("shop.public.orders", 1, 41);
        delivered.record("shop.public.orders", -1, 3);
        assert_eq!(
            delivered.next_offsets(),
            vec![
                ("shop.public.items".to_owned(), 0, 1),
                ("shop.public.items".to_owned(), 2, 8),
                ("shop.public.orders".to_owned(), 1, 42),
            ]
        );
    }
}
