//! Span aggregates: the service graph's edges and each operation's RED tally, per minute,
//! computed when a spans file is written (flush or compaction) and stored beside it, so
//! that the graph and RED of a window read a few thousand tallies instead of every span.
//!
//! A span's edges depend on its parent's service and kind and on whether a span of
//! another service sits below it. Within a file both are known; a span whose parent or
//! child may be in another file is kept as a *deferred* row, resolved when its file is
//! merged with the other (compaction) or at query time, so that the answer equals a single
//! pass over every stored span. The parts: `facts` (spans as small records), `rules` (the
//! graph's rules for one span), `tally` (mergeable latency tallies), `summary` (the stored
//! form), `builder` (flush, merge and query-window building), `peer` (nodes that export
//! nothing), `ids` (hex ids) and `hash` (a fast hasher for id keys). See
//! `docs/traces.md` for the rules and the window semantics.

pub mod builder;
pub mod error;
pub mod facts;
pub mod hash;
pub mod ids;
pub mod peer;
pub mod rules;
pub mod summary;
pub mod tally;

#[cfg(test)]
mod tests;

pub use builder::{Aggregate, SummaryBuilder};
pub use error::{Error, Result};
pub use facts::{Kind, NANOS_PER_MINUTE, minute_of};
pub use peer::{NodeKind, Peer};
pub use rules::End;
pub use summary::{EndName, Summary};
pub use tally::Tally;
