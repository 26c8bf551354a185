//! Per-table counters for the hot path: the counter of each (table, operation) is looked
//! up once and kept, so counting an event costs a hash lookup on two words, not a label
//! set built per event.

use std::collections::HashMap;

use metrics::Counter;

use super::names;
use crate::domain::event::{ChangeEvent, Op};

/// The `tidemark_source_events_total` counters by relation and operation.
#[derive(Default)]
pub(crate) struct EventCounters {
    /// The table's name as labelled (a renamed relation gets a new counter) and its counter.
    by_relation: HashMap<(u32, Op), (String, Counter)>,
}

impl EventCounters {
    /// Counts one delivered event.
    pub fn count(&mut self, event: &ChangeEvent) {
        let (relation, schema, name) = event.table.as_ref().map_or((0, "", ""), |t| {
            (t.relation_id, t.schema.as_str(), t.name.as_str())
        });
        // Logical messages have no table: their label is empty.
        let labelled = |label: &str| match event.table {
            None => label.is_empty(),
            // The label is `names::qualified`: `schema.name` as it is (no allocation per
            // event), or quoted for a name holding a dot or a quote (rare: compared through
            // the allocation).
            Some(_) => {
                (label.len() == schema.len() + 1 + name.len()
                    && label.starts_with(schema)
                    && label.ends_with(name))
                    || label == crate::domain::names::qualified(schema, name)
            }
        };
        let key = (relation, event.op);
        match self.by_relation.get(&key) {
            Some((label, counter)) if labelled(label) => counter.increment(1),
            _ => {
                let label = match event.table {
                    Some(_) => crate::domain::names::qualified(schema, name),
                    None => String::new(),
                };
                let counter = metrics::counter!(
                    names::SOURCE_EVENTS,
                    "table" => label.clone(),
                    "op" => event.op.code()
                );
                counter.increment(1);
                self.by_relation.insert(key, (label, counter));
            }
        }
    }
}
