//! Snapshot progress for people: a progress bar per table on a terminal (rows, rows/s and an
//! ETA from the planner's row estimate), structured log lines every few seconds otherwise;
//! and for machines, `tidemark_snapshot_rows_total` and `tidemark_snapshot_chunks_remaining`.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::observe::names;

/// How often the log form reports.
const LOG_EVERY: Duration = Duration::from_secs(5);

struct TableProgress {
    bar: Option<ProgressBar>,
    rows: u64,
    estimated: u64,
    chunks_left: u32,
}

/// Rows read per table, shown as bars or logged.
pub(crate) struct SnapshotReport {
    bars: Option<MultiProgress>,
    tables: BTreeMap<String, TableProgress>,
    started: Instant,
    last_log: Instant,
    rows_at_last_log: u64,
    total_rows: u64,
}

impl SnapshotReport {
    /// Bars when stderr is a terminal, log lines otherwise.
    pub fn new() -> Self {
        let interactive = std::io::stderr().is_terminal() && std::env::var_os("CI").is_none();
        SnapshotReport {
            bars: interactive
                .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr())),
            tables: BTreeMap::new(),
            started: Instant::now(),
            last_log: Instant::now(),
            rows_at_last_log: 0,
            total_rows: 0,
        }
    }

    /// A table with `chunks` chunks to read and about `estimated_rows` rows.
    pub(crate) fn add_table(&mut self, table: &str, estimated_rows: u64, chunks: u32) {
        let entry = self
            .tables
            .entry(table.to_owned())
            .or_insert_with(|| TableProgress {
                bar: None,
                rows: 0,
                estimated: 0,
                chunks_left: 0,
            });
        entry.estimated += estimated_rows;
        entry.chunks_left += chunks;
        metrics::gauge!(names::SNAPSHOT_CHUNKS_LEFT, "table" => table.to_owned())
            .set(f64::from(entry.chunks_left));
        if let (Some(bars), None) = (&self.bars, &entry.bar) {
            let bar = bars.add(ProgressBar::new(entry.estimated.max(1)));
            let style = ProgressStyle::with_template(
                "{prefix:>24} [{bar:30}] {human_pos}/~{human_len} rows  {per_sec}  eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            bar.set_style(style);
            bar.set_prefix(table.to_owned());
            entry.bar = Some(bar);
        }
    }

    /// `rows` more rows of `table` were emitted.
    pub fn rows(&mut self, table: &str, rows: u64) {
        self.total_rows += rows;
        metrics::counter!(names::SNAPSHOT_ROWS, "table" => table.to_owned()).increment(rows);
        metrics::counter!(names::SOURCE_EVENTS, "table" => table.to_owned(), "op" => "r")
            .increment(rows);
        if let Some(entry) = self.tables.get_mut(table) {
            entry.rows += rows;
            if let Some(bar) = &entry.bar {
                if entry.rows > bar.length().unwrap_or(0) {
                    bar.set_length(entry.rows);
                }
                bar.set_position(entry.rows);
            }
        }
        if self.bars.is_none() && self.last_log.elapsed() >= LOG_EVERY {
            self.log_now();
        }
    }

    /// One chunk of `table` is done.
    pub(crate) fn chunk_done(&mut self, table: &str) {
        if let Some(entry) = self.tables.get_mut(table) {
            entry.chunks_left = entry.chunks_left.saturating_sub(1);
            metrics::gauge!(names::SNAPSHOT_CHUNKS_LEFT, "table" => table.to_owned())
                .set(f64::from(entry.chunks_left));
            if entry.chunks_left == 0 {
                if let Some(bar) = &entry.bar {
                    bar.set_length(entry.rows);
                    bar.finish();
                }
                tracing::info!(table, rows = entry.rows, "snapshot of table done");
            }
        }
    }

    fn log_now(&mut self) {
        let seconds = self.last_log.elapsed().as_secs_f64().max(1e-3);
        let rate = (self.total_rows - self.rows_at_last_log) as f64 / seconds;
        for (table, entry) in &self.tables {
            if entry.chunks_left > 0 {
                tracing::info!(
                    table = table.as_str(),
                    rows = entry.rows,
                    estimated_rows = entry.estimated,
                    chunks_left = entry.chunks_left,
                    "snapshot progress"
                );
            }
        }
        tracing::info!(
            rows = self.total_rows,
            rows_per_second = rate as u64,
            "snapshot progress"
        );
        self.last_log = Instant::now();
        self.rows_at_last_log = self.total_rows;
    }

    /// Rows emitted so far.
    pub(crate) fn total_rows(&self) -> u64 {
        self.total_rows
    }

    /// Ends the report with a summary line.
    pub fn finish(&mut self) {
        let seconds = self.started.elapsed().as_secs_f64().max(1e-3);
        if let Some(bars) = &self.bars {
            let _ = bars.clear();
        }
        tracing::info!(
            rows = self.total_rows,
            seconds = format!("{seconds:.1}"),
            rows_per_second = (self.total_rows as f64 / seconds) as u64,
            "snapshot done"
        );
    }
}

impl Default for SnapshotReport {
    fn default() -> Self {
        Self::new()
    }
}
