//! The log search language of `GET /api/v1/logs?query=...`: Periscope's own, not Loki's LogQL.
//!
//! A small Lucene/Quickwit/Datadog-like language, parsed into an [`Expr`] that the log
//! index turns into its own query. This module only parses; it knows nothing of the index.
//!
//! ```text
//! timeout service:checkout -severity<warn
//! "connection reset" OR attributes.http.route:"/cart"
//! (error OR fail*) AND NOT resource.k8s.pod.name:web-1
//! ```
//!
//! # Grammar
//!
//! ```text
//! query   := or?                      (empty or `*` matches every line)
//! or      := and ("OR" and)*
//! and     := unary (["AND"] unary)*   (juxtaposition is AND)
//! unary   := ("NOT" | "-") unary | primary
//! primary := "(" or ")" | field_term | term
//! ```
//!
//! - Words are runs of characters other than whitespace (any Unicode kind), `(`, `)` and
//!   `"`. `AND`, `OR` and `NOT` are keywords only in upper case and as whole words;
//!   `and` is an ordinary word. Words keep their case; the index decides how to fold it.
//! - A word ending in `*` is a prefix (`timeout*`); a term that is only `*` matches all.
//!   A `*` anywhere else is an ordinary character.
//! - `"..."` is a phrase; inside it `\"` is a quote and `\\` a backslash, and any other
//!   backslash is kept as it is.
//! - A `-` directly before a term or group (`-foo`, `-"a b"`, `-(a b)`) is NOT. A `-`
//!   followed by whitespace, `)`, another `-` or the end is an ordinary word character,
//!   so `a - b` searches for three words and `--verbose` for one.
//! - Field terms are `NAME:value`, where value is a word, a prefix word or a phrase written
//!   right after the colon (`attributes.http.route:"/cart"`). A word is a field term when
//!   the text before its first `:` is a non-empty run of `[A-Za-z0-9_.]`; for attribute
//!   names (`attributes.`, `attr.`, `resource.`, `resource_attributes.`) the key may also
//!   contain `-` (`attributes.http.request.header.x-request-id:abc`). Any other word with a
//!   `:` (`/api:v2`, `a-b:c`) is an ordinary word. A name that is not a known field is an
//!   error, so `http://x` must be quoted to be searched for literally. `NAME:*` matches
//!   lines where the field has any value (a [`MatchKind::Prefix`] with empty text).
//! - `severity>=warn`, `severity>warn`, `severity<=info`, `severity<error`,
//!   `severity=error` and `severity:error` compare the OTLP severity number with a level
//!   name (trace, debug, info, warn, warning, error, fatal; any case) or a number 1–24.
//!   The Lucene/Datadog spelling `severity:>=warn` is accepted too. Comparisons on other
//!   known fields are errors; on unknown names (`user_id=42`) the word is ordinary text.
//!
//! Nested `And`/`Or` of the same kind are flattened, a one-element `And`/`Or` is its
//! element, `*` inside an `And` is dropped and `*` inside an `Or` makes the `Or` [`Expr::All`].
//!
//! The parts: `ast` (what a query is), `lex` (characters to tokens), `parse` (tokens
//! to an [`Expr`]), `terms` (field names, severity levels, flattening) and [`ParseError`].

mod ast;
mod error;
mod lex;
mod parse;
mod terms;

pub use ast::{CmpOp, Expr, Field, MatchKind};
pub use error::ParseError;
pub use parse::parse;

#[cfg(test)]
mod tests;
