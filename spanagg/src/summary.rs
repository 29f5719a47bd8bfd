//! The span aggregates of one spans file as stored beside it (`_{file}.agg`: zstd-compressed
//! JSON): per minute, the service graph's edges and each operation's RED tally; the spans
//! whose contribution depends on spans outside the file (deferred, resolved by the next
//! merge or at query time).

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::peer::Peer;
use crate::tally::Tally;

/// Format version written; readers refuse others.
pub const VERSION: u32 = 1;

/// One end of an edge, by name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndName {
    /// A service, by name.
    Service(String),
    /// A peer that exports nothing (database, queue, external host).
    Peer(Peer),
}

/// Calls along one edge in one minute.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EdgeRow {
    /// Caller.
    pub source: EndName,
    /// Callee.
    pub target: EndName,
    /// Calls, errors and the callee-side durations.
    pub tally: Tally,
}

/// The spans of one operation in one minute.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OperationRow {
    /// Service name.
    pub service: String,
    /// Span name.
    pub operation: String,
    /// Span kind, as the `kind` column spells it.
    pub kind: String,
    /// Spans, errors and durations.
    pub tally: Tally,
}

/// The aggregates of one minute.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MinuteRow {
    /// Unix minute.
    pub minute: i64,
    /// Edges of the graph.
    pub edges: Vec<EdgeRow>,
    /// RED per operation.
    pub operations: Vec<OperationRow>,
}

/// What the graph needs of a span's parent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParentRow {
    /// Service name.
    pub service: String,
    /// Span kind as spelled.
    pub kind: String,
    /// Status is error.
    pub error: bool,
    /// Peer it names.
    pub peer: Option<Peer>,
}

/// A span whose contribution waits for spans outside its file: its parent is not in the
/// file, or it calls an external host and no span of another service below it is in the
/// file (a service that exports spans must not also show as an external host).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeferredRow {
    /// Trace id, 32 hex digits.
    pub trace: String,
    /// Span id.
    pub span: u64,
    /// Parent span id; 0 for none.
    pub parent: u64,
    /// Unix minute of its start.
    pub minute: i64,
    /// Service name.
    pub service: String,
    /// Span name.
    pub operation: String,
    /// Span kind as spelled.
    pub kind: String,
    /// Duration, ns.
    pub duration: i64,
    /// Status is error.
    pub error: bool,
    /// Peer it names.
    pub peer: Option<Peer>,
    /// Its parent, when found.
    pub parent_row: Option<ParentRow>,
    /// Whether a span of another service below it was found.
    pub remote_child: bool,
}

/// The span aggregates of one file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// [`VERSION`].
    pub version: u32,
    /// Per minute, oldest first.
    pub minutes: Vec<MinuteRow>,
    /// Spans resolved later.
    pub deferred: Vec<DeferredRow>,
    /// Smallest and largest minute with spans, if any.
    pub span_minutes: Option<(i64, i64)>,
}

impl Summary {
    /// The stored form: zstd-compressed JSON.
    ///
    /// # Errors
    /// When compression fails.
    pub fn encode(&self) -> Result<Vec<u8>> {
        let json = serde_json::to_vec(self).map_err(|e| Error::Format(e.to_string()))?;
        zstd::bulk::compress(&json, 3).map_err(|e| Error::Format(e.to_string()))
    }

    /// Reads the stored form.
    ///
    /// # Errors
    /// When the bytes are not a summary of this version.
    pub fn decode(bytes: &[u8]) -> Result<Summary> {
        let json = zstd::stream::decode_all(bytes).map_err(|e| Error::Format(e.to_string()))?;
        let s: Summary = serde_json::from_slice(&json).map_err(|e| Error::Format(e.to_string()))?;
        if s.version != VERSION {
            return Err(Error::Format(format!(
                "span aggregates of version {}, this build reads {VERSION}",
                s.version
            )));
        }
        Ok(s)
    }
}
