//! Schema evolution: what a warehouse table must become before rows of a new shape merge.
//!
//! The warehouse keeps, beside each table it manages, the shape it last applied (in
//! `__tidemark_tables`). A record whose shape differs is compared with it:
//!
//! - a column renamed at the source (known from captured DDL) is renamed;
//! - a new column is added, nullable;
//! - a column gone at the source is kept, nullable, or dropped (`sink.on_dropped_column`);
//! - a type change that loses nothing (`int4` → `int8`, a wider `numeric`, anything to
//!   text) alters the column in place;
//! - any other type change follows `sink.on_type_change`: `fail` stops before anything is
//!   applied, naming the column and the remedy; `rename_old` keeps the old column, with its
//!   values, as `<column>__<old kind>` and adds the column with its new type.
//!
//! The plan is pure (no I/O); each warehouse renders its steps in its own SQL
//! ([`super::dialect`]) inside the transaction that merges the rows.

use super::shape::{ColumnKind, SinkColumn, TableShape};
use crate::config::{DroppedColumnPolicy, TypeChangePolicy};

/// One change to a warehouse table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Create the table with these columns.
    Create(TableShape),
    /// Add a nullable column.
    Add(SinkColumn),
    /// Drop a column.
    Drop(String),
    /// Rename a column.
    Rename {
        /// Old name.
        from: String,
        /// New name.
        to: String,
    },
    /// Change a column's type in place (a widening).
    Widen(SinkColumn),
}

/// A type change the policy refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "column {column} changed type from {from:?} to {to:?}, which the warehouse column cannot take without loss; set sink.on_type_change = \"rename_old\" to keep the old column beside a new one, or migrate the warehouse table by hand (and its row in __tidemark_tables) and restart"
)]
pub struct UnsafeTypeChange {
    /// Column.
    pub column: String,
    /// Old kind.
    pub from: ColumnKind,
    /// New kind.
    pub to: ColumnKind,
}

/// The policies that shape a plan.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Policies {
    /// Dropped columns.
    pub dropped: DroppedColumnPolicy,
    /// Unsafe type changes.
    pub type_change: TypeChangePolicy,
}

/// The steps that turn the warehouse table `stored` (none: absent) into one that takes
/// rows of `incoming`, and the shape it then has. Renames come from `incoming.renamed`
/// (`(old, new)` pairs known from captured DDL; the old name may be its Avro spelling).
pub(crate) fn plan(
    stored: Option<&TableShape>,
    incoming: &TableShape,
    policies: Policies,
) -> Result<(Vec<Step>, TableShape), UnsafeTypeChange> {
    let Some(stored) = stored else {
        let mut created = incoming.clone();
        created.renamed.clear();
        return Ok((vec![Step::Create(created.clone())], created));
    };
    let mut steps = Vec::new();
    let mut result = stored.clone();
    result.renamed.clear();
    for (from, to) in &incoming.renamed {
        let old = result
            .columns
            .iter()
            .position(|c| &c.name == from || crate::schema::avro::avro_name(&c.name) == *from);
        if let Some(index) = old
            && result.column(to).is_none()
            && incoming.column(to).is_some()
            && incoming.column(&result.columns[index].name).is_none()
        {
            steps.push(Step::Rename {
                from: result.columns[index].name.clone(),
                to: to.clone(),
            });
            result.columns[index].name = to.clone();
        }
    }
    for column in &incoming.columns {
        let Some(index) = result.columns.iter().position(|c| c.name == column.name) else {
            steps.push(Step::Add(column.clone()));
            result.columns.push(column.clone());
            continue;
        };
        let old = result.columns[index].kind.clone();
        // Equal, or an older shape (a change written before a widening, read late from
        // another partition): the warehouse column already holds its values. Not for a
        // text column: a column that became text and then narrower is a type change.
        if old == column.kind || (old.widens(&column.kind) && old != ColumnKind::Text) {
            continue;
        }
        if column.kind.widens(&old) {
            steps.push(Step::Widen(column.clone()));
            result.columns[index].kind = column.kind.clone();
            continue;
        }
        match policies.type_change {
            TypeChangePolicy::Fail => {
                return Err(UnsafeTypeChange {
                    column: column.name.clone(),
                    from: old,
                    to: column.kind.clone(),
                });
            }
            TypeChangePolicy::RenameOld => {
                let kept = format!("{}__{}", column.name, old.label());
                steps.push(Step::Rename {
                    from: column.name.clone(),
                    to: kept.clone(),
                });
                result.columns[index].name = kept;
                steps.push(Step::Add(column.clone()));
                result.columns.push(column.clone());
            }
        }
    }
    if policies.dropped == DroppedColumnPolicy::Drop {
        let gone: Vec<String> = result
            .columns
            .iter()
            .filter(|c| incoming.column(&c.name).is_none() && !c.name.contains("__"))
            .map(|c| c.name.clone())
            .collect();
        for name in gone {
            steps.push(Step::Drop(name.clone()));
            result.columns.retain(|c| c.name != name);
        }
    }
    result.key = incoming.key.clone();
    Ok((steps, result))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn column(name: &str, kind: ColumnKind) -> SinkColumn {
        SinkColumn {
            name: name.into(),
            kind,
        }
    }

    fn shape(columns: Vec<SinkColumn>) -> TableShape {
        TableShape {
            columns,
            key: vec!["id".into()],
            renamed: Vec::new(),
        }
    }

    #[test]
    fn add_rename_widen_and_keep_dropped() {
        let stored = shape(vec![
            column("id", ColumnKind::Int32),
            column("name", ColumnKind::Text),
            column("gone", ColumnKind::Text),
            column("n", ColumnKind::Int32),
        ]);
        let incoming = shape(vec![
            column("id", ColumnKind::Int32),
            column("title", ColumnKind::Text),
            column("n", ColumnKind::Int64),
            column("added", ColumnKind::Bool),
        ]);
        let mut incoming = incoming;
        incoming.renamed = vec![("name".to_string(), "title".to_string())];
        let (steps, result) =
            plan(Some(&stored), &incoming, Policies::default()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            steps,
            vec![
                Step::Rename {
                    from: "name".into(),
                    to: "title".into()
                },
                Step::Widen(column("n", ColumnKind::Int64)),
                Step::Add(column("added", ColumnKind::Bool)),
            ]
        );
        assert!(
            result.column("gone").is_some(),
            "dropped columns are kept by default"
        );
        let dropping = Policies {
            dropped: DroppedColumnPolicy::Drop,
            ..Policies::default()
        };
        let (steps, result) =
            plan(Some(&stored), &incoming, dropping).unwrap_or_else(|e| panic!("{e}"));
        assert!(steps.contains(&Step::Drop("gone".into())));
        assert!(result.column("gone").is_none());
    }

    #[test]
    fn an_older_narrower_shape_read_late_changes_nothing() {
        let stored = shape(vec![
            column("id", ColumnKind::Int32),
            column("qty", ColumnKind::Int64),
        ]);
        let older = shape(vec![
            column("id", ColumnKind::Int32),
            column("qty", ColumnKind::Int32),
        ]);
        let (steps, result) =
            plan(Some(&stored), &older, Policies::default()).unwrap_or_else(|e| panic!("{e}"));
        assert!(steps.is_empty(), "{steps:?}");
        assert_eq!(
            result.column("qty").map(|c| &c.kind),
            Some(&ColumnKind::Int64)
        );
    }

    #[test]
    fn unsafe_type_change_fails_or_keeps_the_old_column() {
        let stored = shape(vec![
            column("id", ColumnKind::Int32),
            column("v", ColumnKind::Text),
        ]);
        let incoming = shape(vec![
            column("id", ColumnKind::Int32),
            column("v", ColumnKind::Int32),
        ]);
        let error = plan(Some(&stored), &incoming, Policies::default()).err();
        assert!(error.is_some_and(|e| e.to_string().contains("rename_old")));
        let policies = Policies {
            type_change: TypeChangePolicy::RenameOld,
            ..Policies::default()
        };
        let (steps, result) =
            plan(Some(&stored), &incoming, policies).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            steps,
            vec![
                Step::Rename {
                    from: "v".into(),
                    to: "v__text".into()
                },
                Step::Add(column("v", ColumnKind::Int32)),
            ]
        );
        assert!(result.column("v__text").is_some());
    }
}
