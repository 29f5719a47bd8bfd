//! The syntax tree of a log search query: what [`super::parse`] returns and the log index
//! compiles.

/// A parsed log query.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// Matches every log line (empty query or `*`).
    All,
    /// Matches lines that match every operand (at least two, never a nested `And`).
    And(Vec<Expr>),
    /// Matches lines that match any operand (at least two, never a nested `Or`).
    Or(Vec<Expr>),
    /// Matches lines that do not match the operand.
    Not(Box<Expr>),
    /// Text match on a field.
    Match {
        /// The field searched.
        field: Field,
        /// The text as written, without the quotes, escapes or trailing `*`.
        text: String,
        /// How `text` is matched.
        kind: MatchKind,
    },
    /// Severity comparison, by OTLP severity number.
    Severity {
        /// How the line's severity number compares with `number`.
        op: CmpOp,
        /// An OTLP severity number, 1–24.
        number: i32,
    },
}

/// A searchable field of a log record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field {
    /// The log body (`body:`, and every term without a field).
    Body,
    /// The service name (`service:` or `service_name:`).
    Service,
    /// The trace id, hex (`trace_id:`).
    TraceId,
    /// The span id, hex (`span_id:`).
    SpanId,
    /// The severity text as sent by the client (`severity_text:`).
    SeverityText,
    /// A log record attribute, by key (`attributes.KEY:` or `attr.KEY:`).
    Attribute(String),
    /// A resource attribute, by key (`resource.KEY:` or `resource_attributes.KEY:`).
    ResourceAttribute(String),
}

/// How a [`Expr::Match`] text is matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchKind {
    /// A bare word.
    Word,
    /// A quoted phrase: its words, in order.
    Phrase,
    /// A word ending in `*`: any word starting with the text. An empty text (`NAME:*`)
    /// means the field has any value.
    Prefix,
}

/// A comparison operator of a severity term.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    /// Equal (`=` or `:` with a number).
    Eq,
    /// Greater than (`>`).
    Gt,
    /// Greater than or equal (`>=`).
    Ge,
    /// Less than (`<`).
    Lt,
    /// Less than or equal (`<=`).
    Le,
}
