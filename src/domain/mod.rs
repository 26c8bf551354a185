//! The domain: what every layer speaks and nothing below it. Change events and their
//! envelope context ([`event`]), typed column values ([`value`]), log sequence numbers
//! ([`lsn`]), secrets that never print ([`secret`]), PostgreSQL column types as tidemark
//! classifies them ([`column_type`]), exact decimals in Connect's forms ([`decimal`]), dates and times as text from their integer forms
//! ([`calendar`]), a value as the JSON envelope writes it ([`wire`]), table names and topics
//! ([`names`]), and the backoff between retries ([`backoff`]).
//!
//! This module imports no other module of the crate: the layering check
//! (`layering_tests` in `lib.rs`) fails when it does.

pub mod backoff;
pub mod calendar;
pub mod column_type;
pub mod decimal;
pub mod event;
pub mod lsn;
pub mod names;
pub mod secret;
pub mod value;
pub mod wire;
