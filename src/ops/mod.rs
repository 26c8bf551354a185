//! Operator commands beyond `run`: [`check`] tries every connection and setting the
//! configuration names, [`status`] reports the slot, the publication and the stored
//! positions, [`drill`] rehearses a schema change on the configured stack. `setup` and
//! `teardown` are the source's own ([`crate::source::setup`]); `replay` is the sink's
//! ([`crate::sink::replay`]).

pub mod check;
pub mod drill;
pub mod status;
