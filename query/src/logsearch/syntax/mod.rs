//! The log search language of `GET /api/v1/logs?query=...`.
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

/// Why a query could not be parsed, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} at column {column}")]
pub struct ParseError {
    /// What is wrong, in a sentence a user can act on.
    pub message: String,
    /// Where, as a 1-based position in characters (not bytes) of the query.
    pub column: usize,
}

impl ParseError {
    fn new(message: impl Into<String>, column: usize) -> Self {
        ParseError {
            message: message.into(),
            column,
        }
    }
}

/// Parses a log search query.
///
/// An empty query (or only whitespace) and `*` give [`Expr::All`].
///
/// ```
/// use periscope_query::logsearch::syntax::{parse, Expr, Field, MatchKind};
///
/// let expr = parse("service:checkout").unwrap();
/// assert_eq!(
///     expr,
///     Expr::Match { field: Field::Service, text: "checkout".into(), kind: MatchKind::Word }
/// );
/// ```
///
/// # Errors
///
/// Returns a [`ParseError`] with the column of the problem for an unterminated quote,
/// unbalanced or empty parentheses, an operator without an operand, an unknown field, a
/// field without a value, a comparison on a field other than severity, or a severity that
/// is neither a level name nor a number 1–24.
pub fn parse(input: &str) -> Result<Expr, ParseError> {
    let tokens = lex(input)?;
    if tokens.is_empty() {
        return Ok(Expr::All);
    }
    let mut parser = Parser {
        tokens,
        pos: 0,
        depth: 0,
    };
    let expr = parser.or()?;
    match parser.peek() {
        None => Ok(expr),
        Some(token) => Err(ParseError::new("unexpected `)`", token.column)),
    }
}

// ---------------------------------------------------------------------------------------
// Lexer

#[derive(Debug, Clone, PartialEq)]
enum TokenKind {
    LParen,
    RParen,
    And,
    Or,
    Not,
    /// A `-` glued to the term or group after it.
    Minus,
    /// A bare word; `quote_follows` when a `"` comes right after it, with no space.
    Word {
        text: String,
        quote_follows: bool,
    },
    /// A quoted string, unescaped.
    Phrase(String),
}

#[derive(Debug, Clone, PartialEq)]
struct Token {
    kind: TokenKind,
    /// 1-based, in chars.
    column: usize,
}

fn is_word_char(c: char) -> bool {
    !c.is_whitespace() && !matches!(c, '(' | ')' | '"')
}

fn lex(input: &str) -> Result<Vec<Token>, ParseError> {
    let chars: Vec<char> = input.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    // After a `-`, the next word is never a keyword: `-AND` searches for "AND".
    let mut after_minus = false;
    while i < chars.len() {
        let c = chars[i];
        let column = i + 1;
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let kind = match c {
            '(' => {
                i += 1;
                TokenKind::LParen
            }
            ')' => {
                i += 1;
                TokenKind::RParen
            }
            '"' => {
                let (text, end) = lex_quoted(&chars, i)?;
                i = end;
                TokenKind::Phrase(text)
            }
            '-' if chars
                .get(i + 1)
                .is_some_and(|&n| !n.is_whitespace() && n != ')' && n != '-') =>
            {
                i += 1;
                tokens.push(Token {
                    kind: TokenKind::Minus,
                    column,
                });
                after_minus = true;
                continue;
            }
            _ => {
                let start = i;
                while i < chars.len() && is_word_char(chars[i]) {
                    i += 1;
                }
                let text: String = chars[start..i].iter().collect();
                match text.as_str() {
                    "AND" if !after_minus => TokenKind::And,
                    "OR" if !after_minus => TokenKind::Or,
                    "NOT" if !after_minus => TokenKind::Not,
                    _ => TokenKind::Word {
                        text,
                        quote_follows: chars.get(i) == Some(&'"'),
                    },
                }
            }
        };
        after_minus = false;
        tokens.push(Token { kind, column });
    }
    Ok(tokens)
}

/// Reads the quoted string opening at `chars[open]`; returns its text and the index
/// after the closing quote.
fn lex_quoted(chars: &[char], open: usize) -> Result<(String, usize), ParseError> {
    let mut text = String::new();
    let mut i = open + 1;
    while let Some(&c) = chars.get(i) {
        match c {
            '"' => return Ok((text, i + 1)),
            '\\' if matches!(chars.get(i + 1), Some('"' | '\\')) => {
                text.push(chars[i + 1]);
                i += 2;
            }
            _ => {
                text.push(c);
                i += 1;
            }
        }
    }
    Err(ParseError::new(
        "unterminated quote; close it with `\"`, or write `\\\"` for a quote inside a phrase",
        open + 1,
    ))
}

// ---------------------------------------------------------------------------------------
// Parser

/// How deeply `NOT`, `-` and groups may nest, so that a hostile query cannot overflow
/// the stack of the thread parsing it.
const MAX_DEPTH: usize = 64;

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
    /// How many `unary` calls are on the stack.
    depth: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn advance(&mut self) -> Option<Token> {
        let token = self.tokens.get(self.pos).cloned();
        if token.is_some() {
            self.pos += 1;
        }
        token
    }

    /// Whether the next token can begin a `unary`.
    fn at_term_start(&self) -> bool {
        matches!(
            self.peek().map(|t| &t.kind),
            Some(
                TokenKind::LParen
                    | TokenKind::Not
                    | TokenKind::Minus
                    | TokenKind::Word { .. }
                    | TokenKind::Phrase(_)
            )
        )
    }

    /// Fails unless a term follows the operator `name` just read at `column`.
    fn expect_operand(&self, name: &str, column: usize) -> Result<(), ParseError> {
        if self.at_term_start() {
            Ok(())
        } else {
            Err(ParseError::new(
                format!("expected a term after `{name}`"),
                column,
            ))
        }
    }

    fn or(&mut self) -> Result<Expr, ParseError> {
        let mut operands = vec![self.and()?];
        while let Some(token) = self.peek() {
            if token.kind != TokenKind::Or {
                break;
            }
            let column = token.column;
            self.pos += 1;
            self.expect_operand("OR", column)?;
            operands.push(self.and()?);
        }
        Ok(or_of(operands))
    }

    fn and(&mut self) -> Result<Expr, ParseError> {
        let mut operands = vec![self.unary()?];
        loop {
            if let Some(token) = self.peek()
                && token.kind == TokenKind::And
            {
                let column = token.column;
                self.pos += 1;
                self.expect_operand("AND", column)?;
            } else if !self.at_term_start() {
                break;
            }
            operands.push(self.unary()?);
        }
        Ok(and_of(operands))
    }

    fn unary(&mut self) -> Result<Expr, ParseError> {
        if self.depth >= MAX_DEPTH {
            return Err(ParseError::new(
                format!(
                    "the query nests `NOT`, `-` or parentheses more than {MAX_DEPTH} deep; \
                     simplify it"
                ),
                self.peek().map_or(1, |t| t.column),
            ));
        }
        self.depth += 1;
        let result = self.unary_inner();
        self.depth -= 1;
        result
    }

    fn unary_inner(&mut self) -> Result<Expr, ParseError> {
        match self.peek() {
            Some(Token {
                kind: TokenKind::Not,
                column,
            }) => {
                let column = *column;
                self.pos += 1;
                self.expect_operand("NOT", column)?;
                Ok(Expr::Not(Box::new(self.unary()?)))
            }
            Some(Token {
                kind: TokenKind::Minus,
                ..
            }) => {
                // The lexer emits `-` only when a term or group is glued to it.
                self.pos += 1;
                Ok(Expr::Not(Box::new(self.unary()?)))
            }
            _ => self.primary(),
        }
    }

    fn primary(&mut self) -> Result<Expr, ParseError> {
        let Some(Token { kind, column }) = self.advance() else {
            // Callers check `at_term_start` first, and `parse` never calls with no tokens.
            return Err(ParseError::new(
                "expected a term",
                self.tokens.last().map_or(1, |t| t.column),
            ));
        };
        match kind {
            TokenKind::LParen => {
                match self.peek() {
                    None => return Err(ParseError::new("missing `)`", column)),
                    Some(t) if t.kind == TokenKind::RParen => {
                        return Err(ParseError::new(
                            "empty group `()`; put a term inside or remove it",
                            column,
                        ));
                    }
                    Some(_) => {}
                }
                let inner = self.or()?;
                match self.advance() {
                    Some(Token {
                        kind: TokenKind::RParen,
                        ..
                    }) => Ok(inner),
                    _ => Err(ParseError::new("missing `)`", column)),
                }
            }
            TokenKind::RParen => Err(ParseError::new("unexpected `)`", column)),
            TokenKind::And => Err(ParseError::new("expected a term before `AND`", column)),
            TokenKind::Or => Err(ParseError::new("expected a term before `OR`", column)),
            TokenKind::Phrase(text) => Ok(Expr::Match {
                field: Field::Body,
                text,
                kind: MatchKind::Phrase,
            }),
            TokenKind::Word {
                text,
                quote_follows,
            } => self.word(&text, column, quote_follows),
            // `unary` consumes these before calling `primary`.
            TokenKind::Not | TokenKind::Minus => {
                self.pos -= 1;
                self.unary()
            }
        }
    }

    /// Takes the phrase glued to the word just read, if there is one: its text and the
    /// column of its first character inside the quotes.
    fn glued_phrase(&mut self, quote_follows: bool) -> Option<(String, usize)> {
        if !quote_follows {
            return None;
        }
        match self.peek() {
            Some(Token {
                kind: TokenKind::Phrase(text),
                column,
            }) => {
                let found = (text.clone(), column + 1);
                self.pos += 1;
                Some(found)
            }
            _ => None,
        }
    }

    /// Interprets a bare word: `*`, a field term, a severity comparison or body text.
    fn word(&mut self, text: &str, column: usize, quote_follows: bool) -> Result<Expr, ParseError> {
        if text.trim_end_matches('*').is_empty() {
            return Ok(Expr::All);
        }
        // The name run is ASCII, so its byte length is its length in chars.
        let name_len = text
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-'))
            .unwrap_or(text.len());
        let name = &text[..name_len];
        let rest = &text[name_len..];
        if name.is_empty() || !is_field_name_syntax(name) {
            return Ok(body_word(text));
        }
        if let Some(value) = rest.strip_prefix(':') {
            let value_column = column + name_len + 1;
            return match resolve_field(name) {
                None => Err(ParseError::new(
                    format!(
                        "unknown field `{name}` (known: body, service, trace_id, span_id, \
                         severity, severity_text, attributes.<key>, resource.<key>); \
                         quote the text to search for it literally"
                    ),
                    column,
                )),
                Some(FieldName::Severity) => match split_cmp(value) {
                    Some((op, op_len, value)) => self.severity(
                        &text[..name_len + 1 + op_len],
                        op,
                        value,
                        value_column + op_len,
                        quote_follows,
                    ),
                    None => self.severity(
                        &text[..name_len + 1],
                        CmpOp::Eq,
                        value,
                        value_column,
                        quote_follows,
                    ),
                },
                Some(FieldName::Field(field)) => {
                    if value.is_empty() {
                        match self.glued_phrase(quote_follows) {
                            Some((phrase, _)) => Ok(Expr::Match {
                                field,
                                text: phrase,
                                kind: MatchKind::Phrase,
                            }),
                            None => Err(ParseError::new(
                                format!("missing value after `{name}:`"),
                                value_column,
                            )),
                        }
                    } else {
                        Ok(field_word(field, value))
                    }
                }
            };
        }
        if let Some((op, op_len, value)) = split_cmp(rest) {
            return match resolve_field(name) {
                Some(FieldName::Severity) => self.severity(
                    &text[..name_len + op_len],
                    op,
                    value,
                    column + name_len + op_len,
                    quote_follows,
                ),
                Some(FieldName::Field(_)) => Err(ParseError::new(
                    format!(
                        "comparison is only supported on severity; write `{name}:VALUE` \
                         to match the field"
                    ),
                    column + name_len,
                )),
                None => Ok(body_word(text)),
            };
        }
        Ok(body_word(text))
    }

    /// Builds a severity comparison. `written` is the text before the value
    /// (`severity>=`), for messages; `value_column` is where the value starts.
    fn severity(
        &mut self,
        written: &str,
        op: CmpOp,
        value: &str,
        value_column: usize,
        quote_follows: bool,
    ) -> Result<Expr, ParseError> {
        let (value, value_column) = if value.is_empty() {
            match self.glued_phrase(quote_follows) {
                Some(found) => found,
                None => {
                    return Err(ParseError::new(
                        format!("missing value after `{written}`"),
                        value_column,
                    ));
                }
            }
        } else {
            (value.to_owned(), value_column)
        };
        if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
            return match value.parse::<i32>() {
                Ok(number) if (1..=24).contains(&number) => Ok(Expr::Severity { op, number }),
                _ => Err(ParseError::new(
                    format!("severity number `{value}` is out of range; use 1 to 24"),
                    value_column,
                )),
            };
        }
        let Some((low, high)) = level_range(&value) else {
            return Err(ParseError::new(
                format!(
                    "unknown severity `{value}`; use trace, debug, info, warn, warning, \
                     error, fatal or a number 1 to 24"
                ),
                value_column,
            ));
        };
        Ok(match op {
            CmpOp::Ge => Expr::Severity { op, number: low },
            CmpOp::Gt => Expr::Severity { op, number: high },
            CmpOp::Le => Expr::Severity { op, number: high },
            CmpOp::Lt => Expr::Severity { op, number: low },
            CmpOp::Eq => Expr::And(vec![
                Expr::Severity {
                    op: CmpOp::Ge,
                    number: low,
                },
                Expr::Severity {
                    op: CmpOp::Le,
                    number: high,
                },
            ]),
        })
    }
}

// ---------------------------------------------------------------------------------------
// Terms

/// Prefixes of attribute field names; the key after them may contain `-`.
const ATTRIBUTE_PREFIXES: [&str; 4] = ["attributes.", "attr.", "resource.", "resource_attributes."];

enum FieldName {
    Severity,
    Field(Field),
}

/// Whether `name` (a run of `[A-Za-z0-9_.-]`) may name a field: no `-`, except in the
/// key of an attribute name.
fn is_field_name_syntax(name: &str) -> bool {
    !name.contains('-') || ATTRIBUTE_PREFIXES.iter().any(|p| name.starts_with(p))
}

fn resolve_field(name: &str) -> Option<FieldName> {
    let field = match name {
        "severity" => return Some(FieldName::Severity),
        "body" => Field::Body,
        "service" | "service_name" => Field::Service,
        "trace_id" => Field::TraceId,
        "span_id" => Field::SpanId,
        "severity_text" => Field::SeverityText,
        _ => {
            let key = |prefixes: [&str; 2]| {
                prefixes
                    .iter()
                    .find_map(|p| name.strip_prefix(p))
                    .filter(|key| !key.is_empty())
                    .map(str::to_owned)
            };
            if let Some(key) = key(["attributes.", "attr."]) {
                Field::Attribute(key)
            } else if let Some(key) = key(["resource.", "resource_attributes."]) {
                Field::ResourceAttribute(key)
            } else {
                return None;
            }
        }
    };
    Some(FieldName::Field(field))
}

/// Splits a leading comparison operator off `s`: the operator, its length and the rest.
fn split_cmp(s: &str) -> Option<(CmpOp, usize, &str)> {
    [
        (">=", CmpOp::Ge),
        ("<=", CmpOp::Le),
        (">", CmpOp::Gt),
        ("<", CmpOp::Lt),
        ("=", CmpOp::Eq),
    ]
    .into_iter()
    .find_map(|(written, op)| {
        s.strip_prefix(written)
            .map(|rest| (op, written.len(), rest))
    })
}

/// The OTLP severity number range of a level name, in any case.
fn level_range(name: &str) -> Option<(i32, i32)> {
    Some(match name.to_ascii_lowercase().as_str() {
        "trace" => (1, 4),
        "debug" => (5, 8),
        "info" => (9, 12),
        "warn" | "warning" => (13, 16),
        "error" => (17, 20),
        "fatal" => (21, 24),
        _ => return None,
    })
}

fn body_word(text: &str) -> Expr {
    field_word(Field::Body, text)
}

/// A word or, when it ends in `*`, a prefix match.
fn field_word(field: Field, text: &str) -> Expr {
    let stripped = text.trim_end_matches('*');
    let kind = if stripped.len() == text.len() {
        MatchKind::Word
    } else {
        MatchKind::Prefix
    };
    Expr::Match {
        field,
        text: stripped.to_owned(),
        kind,
    }
}

fn and_of(operands: Vec<Expr>) -> Expr {
    let mut flat = Vec::with_capacity(operands.len());
    for operand in operands {
        match operand {
            Expr::And(inner) => flat.extend(inner),
            Expr::All => {}
            other => flat.push(other),
        }
    }
    match <[Expr; 1]>::try_from(flat) {
        Ok([only]) => only,
        Err(flat) if flat.is_empty() => Expr::All,
        Err(flat) => Expr::And(flat),
    }
}

fn or_of(operands: Vec<Expr>) -> Expr {
    let mut flat = Vec::with_capacity(operands.len());
    for operand in operands {
        match operand {
            Expr::Or(inner) => flat.extend(inner),
            Expr::All => return Expr::All,
            other => flat.push(other),
        }
    }
    match <[Expr; 1]>::try_from(flat) {
        Ok([only]) => only,
        Err(flat) => Expr::Or(flat),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(field: Field, text: &str, kind: MatchKind) -> Expr {
        Expr::Match {
            field,
            text: text.to_owned(),
            kind,
        }
    }

    fn w(text: &str) -> Expr {
        m(Field::Body, text, MatchKind::Word)
    }

    fn phrase(text: &str) -> Expr {
        m(Field::Body, text, MatchKind::Phrase)
    }

    fn prefix(text: &str) -> Expr {
        m(Field::Body, text, MatchKind::Prefix)
    }

    fn not(e: Expr) -> Expr {
        Expr::Not(Box::new(e))
    }

    fn sev(op: CmpOp, number: i32) -> Expr {
        Expr::Severity { op, number }
    }

    fn ok(input: &str) -> Expr {
        match parse(input) {
            Ok(e) => e,
            Err(e) => panic!("{input:?} failed to parse: {e}"),
        }
    }

    /// The message and column of the error `input` gives.
    fn err(input: &str) -> (String, usize) {
        match parse(input) {
            Ok(e) => panic!("{input:?} parsed as {e:?}, expected an error"),
            Err(e) => (e.message, e.column),
        }
    }

    fn assert_err(input: &str, message_start: &str, column: usize) {
        let (message, got_column) = err(input);
        assert!(
            message.starts_with(message_start),
            "{input:?}: message {message:?} does not start with {message_start:?}"
        );
        assert_eq!(got_column, column, "{input:?}: column of {message:?}");
    }

    #[test]
    fn empty_and_star_match_all() {
        assert_eq!(ok(""), Expr::All);
        assert_eq!(ok("   \t\n"), Expr::All);
        assert_eq!(ok("*"), Expr::All);
        assert_eq!(ok(" * "), Expr::All);
        assert_eq!(ok("(*)"), Expr::All);
    }

    #[test]
    fn star_is_dropped_from_and_and_absorbs_or() {
        assert_eq!(ok("* foo"), w("foo"));
        assert_eq!(ok("foo OR *"), Expr::All);
        assert_eq!(ok("-*"), not(Expr::All));
    }

    #[test]
    fn single_word_is_body_word() {
        assert_eq!(ok("timeout"), w("timeout"));
        assert_eq!(ok("TimeOut"), w("TimeOut"));
    }

    #[test]
    fn juxtaposed_words_must_all_match() {
        assert_eq!(
            ok("connection reset by peer"),
            Expr::And(vec![w("connection"), w("reset"), w("by"), w("peer")])
        );
        assert_eq!(ok("a AND b"), Expr::And(vec![w("a"), w("b")]));
        assert_eq!(ok("a AND b c"), Expr::And(vec![w("a"), w("b"), w("c")]));
    }

    #[test]
    fn lowercase_keywords_are_words() {
        assert_eq!(
            ok("a and b or not c"),
            Expr::And(vec![w("a"), w("and"), w("b"), w("or"), w("not"), w("c")])
        );
        assert_eq!(
            ok("ANDROID ORDER"),
            Expr::And(vec![w("ANDROID"), w("ORDER")])
        );
    }

    #[test]
    fn or_binds_looser_than_and() {
        assert_eq!(
            ok("a b OR c"),
            Expr::Or(vec![Expr::And(vec![w("a"), w("b")]), w("c")])
        );
        assert_eq!(
            ok("a OR b c"),
            Expr::Or(vec![w("a"), Expr::And(vec![w("b"), w("c")])])
        );
        assert_eq!(
            ok("a AND b OR c AND d"),
            Expr::Or(vec![
                Expr::And(vec![w("a"), w("b")]),
                Expr::And(vec![w("c"), w("d")])
            ])
        );
        assert_eq!(ok("a OR b OR c"), Expr::Or(vec![w("a"), w("b"), w("c")]));
    }

    #[test]
    fn grouping_overrides_precedence_and_flattens() {
        assert_eq!(
            ok("a (b OR c)"),
            Expr::And(vec![w("a"), Expr::Or(vec![w("b"), w("c")])])
        );
        assert_eq!(
            ok("(a OR b)(c OR d)"),
            Expr::And(vec![
                Expr::Or(vec![w("a"), w("b")]),
                Expr::Or(vec![w("c"), w("d")])
            ])
        );
        assert_eq!(
            ok("a (b c) d"),
            Expr::And(vec![w("a"), w("b"), w("c"), w("d")])
        );
        assert_eq!(
            ok("a OR (b OR (c))"),
            Expr::Or(vec![w("a"), w("b"), w("c")])
        );
        assert_eq!(ok("((a))"), w("a"));
    }

    #[test]
    fn not_and_minus_negate() {
        assert_eq!(ok("NOT a"), not(w("a")));
        assert_eq!(ok("-a"), not(w("a")));
        assert_eq!(ok("a NOT b"), Expr::And(vec![w("a"), not(w("b"))]));
        assert_eq!(ok("a AND NOT b"), Expr::And(vec![w("a"), not(w("b"))]));
        assert_eq!(ok("a -b"), Expr::And(vec![w("a"), not(w("b"))]));
        assert_eq!(ok("NOT NOT a"), not(not(w("a"))));
        assert_eq!(
            ok("NOT a OR b"),
            Expr::Or(vec![not(w("a")), w("b")]),
            "NOT binds tighter than OR"
        );
        assert_eq!(
            ok("-(a OR b) c"),
            Expr::And(vec![not(Expr::Or(vec![w("a"), w("b")])), w("c")])
        );
        assert_eq!(ok("NOT(a)"), not(w("a")));
        assert_eq!(ok("-\"a b\""), not(phrase("a b")));
        assert_eq!(
            ok("-service:web"),
            not(m(Field::Service, "web", MatchKind::Word))
        );
    }

    #[test]
    fn minus_not_glued_to_a_term_is_a_word() {
        assert_eq!(ok("a - b"), Expr::And(vec![w("a"), w("-"), w("b")]));
        assert_eq!(ok("--verbose"), w("--verbose"));
        assert_eq!(ok("x-request-id"), w("x-request-id"));
        assert_eq!(ok("-AND"), not(w("AND")), "a glued word is never a keyword");
        assert_eq!(ok("(a -)"), Expr::And(vec![w("a"), w("-")]));
    }

    #[test]
    fn phrases_unescape_quotes_and_backslashes() {
        assert_eq!(ok("\"connection reset\""), phrase("connection reset"));
        assert_eq!(ok(r#""say \"hi\"""#), phrase("say \"hi\""));
        assert_eq!(ok(r#""C:\\temp""#), phrase("C:\\temp"));
        assert_eq!(ok(r#""a\nb""#), phrase("a\\nb"), "other escapes are kept");
        assert_eq!(ok(r#""""#), phrase(""));
        assert_eq!(
            ok(r#""a*" "OR""#),
            Expr::And(vec![phrase("a*"), phrase("OR")])
        );
        assert_eq!(ok(r#"foo"bar""#), Expr::And(vec![w("foo"), phrase("bar")]));
    }

    #[test]
    fn trailing_star_is_prefix() {
        assert_eq!(ok("timeout*"), prefix("timeout"));
        assert_eq!(ok("user_*"), prefix("user_"));
        assert_eq!(ok("fail**"), prefix("fail"));
        assert_eq!(
            ok("*fail"),
            w("*fail"),
            "only a trailing star is a wildcard"
        );
        assert_eq!(ok("a*b"), w("a*b"));
    }

    #[test]
    fn ordinary_words_keep_their_text() {
        assert_eq!(ok("user_id=42"), w("user_id=42"));
        assert_eq!(ok("/api/cart"), w("/api/cart"));
        assert_eq!(ok("E1234"), w("E1234"));
        assert_eq!(ok("count>5"), w("count>5"));
        assert_eq!(ok("/api:v2"), w("/api:v2"));
        assert_eq!(ok("a-b:c"), w("a-b:c"));
        assert_eq!(ok("2024-01-02T10:00:00"), w("2024-01-02T10:00:00"));
    }

    #[test]
    fn cjk_and_emoji_are_words() {
        assert_eq!(ok("결제 실패"), Expr::And(vec![w("결제"), w("실패")]));
        assert_eq!(ok("タイムアウト"), w("タイムアウト"));
        assert_eq!(ok("超时 OR 🔥"), Expr::Or(vec![w("超时"), w("🔥")]));
        assert_eq!(
            ok("接続\u{3000}失敗"),
            Expr::And(vec![w("接続"), w("失敗")])
        );
        assert_eq!(
            ok("service:결제 \"データ 破損\""),
            Expr::And(vec![
                m(Field::Service, "결제", MatchKind::Word),
                phrase("データ 破損")
            ])
        );
    }

    #[test]
    fn every_field_name_form() {
        use MatchKind::*;
        assert_eq!(ok("body:timeout"), m(Field::Body, "timeout", Word));
        assert_eq!(ok("service:checkout"), m(Field::Service, "checkout", Word));
        assert_eq!(
            ok("service_name:checkout"),
            m(Field::Service, "checkout", Word)
        );
        assert_eq!(
            ok("trace_id:4bf92f3577b3"),
            m(Field::TraceId, "4bf92f3577b3", Word)
        );
        assert_eq!(ok("span_id:00f067aa"), m(Field::SpanId, "00f067aa", Word));
        assert_eq!(
            ok("severity_text:WARN"),
            m(Field::SeverityText, "WARN", Word)
        );
        assert_eq!(
            ok("attributes.user_id:42"),
            m(Field::Attribute("user_id".into()), "42", Word)
        );
        assert_eq!(
            ok("attr.user_id:42"),
            m(Field::Attribute("user_id".into()), "42", Word)
        );
        assert_eq!(
            ok(r#"attributes.http.route:"/cart""#),
            m(Field::Attribute("http.route".into()), "/cart", Phrase)
        );
        assert_eq!(
            ok("resource.k8s.pod.name:web-1"),
            m(
                Field::ResourceAttribute("k8s.pod.name".into()),
                "web-1",
                Word
            )
        );
        assert_eq!(
            ok("resource_attributes.host.name:db*"),
            m(Field::ResourceAttribute("host.name".into()), "db", Prefix)
        );
        assert_eq!(
            ok("attributes.http.request.header.x-request-id:abc"),
            m(
                Field::Attribute("http.request.header.x-request-id".into()),
                "abc",
                Word
            )
        );
    }

    #[test]
    fn field_values_may_be_phrases_or_prefixes() {
        use MatchKind::*;
        assert_eq!(ok("service:check*"), m(Field::Service, "check", Prefix));
        assert_eq!(ok("body:\"a b\""), m(Field::Body, "a b", Phrase));
        assert_eq!(
            ok("attr.user:*"),
            m(Field::Attribute("user".into()), "", Prefix),
            "NAME:* means the field has a value"
        );
        assert_eq!(ok("body:http://x"), m(Field::Body, "http://x", Word));
        assert_eq!(ok("service:a=b"), m(Field::Service, "a=b", Word));
        assert_eq!(
            ok("service:web OR service:api"),
            Expr::Or(vec![
                m(Field::Service, "web", Word),
                m(Field::Service, "api", Word)
            ])
        );
    }

    #[test]
    fn severity_level_names_map_to_ranges() {
        assert_eq!(ok("severity>=warn"), sev(CmpOp::Ge, 13));
        assert_eq!(ok("severity>warn"), sev(CmpOp::Gt, 16));
        assert_eq!(ok("severity<=info"), sev(CmpOp::Le, 12));
        assert_eq!(ok("severity<error"), sev(CmpOp::Lt, 17));
        let error = Expr::And(vec![sev(CmpOp::Ge, 17), sev(CmpOp::Le, 20)]);
        assert_eq!(ok("severity=error"), error);
        assert_eq!(ok("severity:error"), error);
        assert_eq!(ok("severity:\"error\""), error);
        assert_eq!(ok("severity:>=warn"), sev(CmpOp::Ge, 13));
        assert_eq!(ok("severity>=trace"), sev(CmpOp::Ge, 1));
        assert_eq!(ok("severity>=debug"), sev(CmpOp::Ge, 5));
        assert_eq!(ok("severity<=fatal"), sev(CmpOp::Le, 24));
        assert_eq!(ok("severity>=warning"), sev(CmpOp::Ge, 13));
    }

    #[test]
    fn severity_names_are_case_insensitive() {
        assert_eq!(ok("severity>=WARN"), sev(CmpOp::Ge, 13));
        assert_eq!(ok("severity>=Warning"), sev(CmpOp::Ge, 13));
        assert_eq!(
            ok("severity:Fatal"),
            Expr::And(vec![sev(CmpOp::Ge, 21), sev(CmpOp::Le, 24)])
        );
    }

    #[test]
    fn severity_numbers_are_used_as_is() {
        assert_eq!(ok("severity>=13"), sev(CmpOp::Ge, 13));
        assert_eq!(ok("severity>13"), sev(CmpOp::Gt, 13));
        assert_eq!(ok("severity<=9"), sev(CmpOp::Le, 9));
        assert_eq!(ok("severity<9"), sev(CmpOp::Lt, 9));
        assert_eq!(ok("severity=17"), sev(CmpOp::Eq, 17));
        assert_eq!(ok("severity:1"), sev(CmpOp::Eq, 1));
        assert_eq!(ok("severity:24"), sev(CmpOp::Eq, 24));
    }

    #[test]
    fn severity_combines_with_other_terms() {
        assert_eq!(
            ok("timeout severity>=error -service:test"),
            Expr::And(vec![
                w("timeout"),
                sev(CmpOp::Ge, 17),
                not(m(Field::Service, "test", MatchKind::Word))
            ])
        );
        assert_eq!(
            ok("severity=error a"),
            Expr::And(vec![sev(CmpOp::Ge, 17), sev(CmpOp::Le, 20), w("a")])
        );
        assert_eq!(
            ok("NOT severity:info"),
            not(Expr::And(vec![sev(CmpOp::Ge, 9), sev(CmpOp::Le, 12)]))
        );
    }

    #[test]
    fn unterminated_quote_points_at_opening_quote() {
        assert_err("\"abc", "unterminated quote", 1);
        assert_err("foo \"bar baz", "unterminated quote", 5);
        assert_err(r#""a\"#, "unterminated quote", 1);
        assert_err("a (", "missing `)`", 3);
        assert_err("service:\"web", "unterminated quote", 9);
        assert_err("결제 \"실패", "unterminated quote", 4);
    }

    #[test]
    fn unbalanced_parentheses() {
        assert_err("(a b", "missing `)`", 1);
        assert_err("a (b (c)", "missing `)`", 3);
        assert_err("a)", "unexpected `)`", 2);
        assert_err(")", "unexpected `)`", 1);
        assert_err("(a))", "unexpected `)`", 4);
        assert_err("a OR ) b", "expected a term after `OR`", 3);
    }

    #[test]
    fn empty_group_is_an_error() {
        assert_err("()", "empty group", 1);
        assert_err("a ( )", "empty group", 3);
        assert_err("(())", "empty group", 2);
    }

    #[test]
    fn operators_need_operands() {
        assert_err("AND a", "expected a term before `AND`", 1);
        assert_err("OR a", "expected a term before `OR`", 1);
        assert_err("a AND", "expected a term after `AND`", 3);
        assert_err("foo OR", "expected a term after `OR`", 5);
        assert_err("foo OR ", "expected a term after `OR`", 5);
        assert_err("NOT", "expected a term after `NOT`", 1);
        assert_err("a NOT", "expected a term after `NOT`", 3);
        assert_err("a AND OR b", "expected a term after `AND`", 3);
        assert_err("a OR AND b", "expected a term after `OR`", 3);
        assert_err("(OR a)", "expected a term before `OR`", 2);
        assert_err("(a NOT)", "expected a term after `NOT`", 4);
        assert_err("AND", "expected a term before `AND`", 1);
    }

    #[test]
    fn unknown_field_points_at_the_name_and_suggests_quoting() {
        let (message, column) = err("http://example.com");
        assert_eq!(
            message,
            "unknown field `http` (known: body, service, trace_id, span_id, severity, \
             severity_text, attributes.<key>, resource.<key>); quote the text to search \
             for it literally"
        );
        assert_eq!(column, 1);
        assert_err("foo level:warn", "unknown field `level`", 5);
        assert_err("12:30", "unknown field `12`", 1);
        assert_err("Service:web", "unknown field `Service`", 1);
        assert_err("attributes.:x", "unknown field `attributes.`", 1);
        assert_err("결제 host:db", "unknown field `host`", 4);
        assert_err("-host:db", "unknown field `host`", 2);
        assert_eq!(ok("\"http://example.com\""), phrase("http://example.com"));
    }

    #[test]
    fn field_without_value_is_an_error() {
        let (message, column) = err("service:");
        assert_eq!(message, "missing value after `service:`");
        assert_eq!(column, 9);
        assert_err("service: web", "missing value after `service:`", 9);
        assert_err("a attr.k:)", "missing value after `attr.k:`", 10);
        assert_err("(service:)", "missing value after `service:`", 10);
        assert_err("日本 body:", "missing value after `body:`", 9);
        assert_err("severity>=", "missing value after `severity>=`", 11);
        assert_err("severity: error", "missing value after `severity:`", 10);
    }

    #[test]
    fn comparison_is_only_for_severity() {
        assert_err("service>=x", "comparison is only supported on severity", 8);
        assert_err("service=x", "comparison is only supported on severity", 8);
        assert_err(
            "attributes.http.status_code>500",
            "comparison is only supported on severity",
            28,
        );
        assert_err(
            "severity_text<x",
            "comparison is only supported on severity",
            14,
        );
    }

    #[test]
    fn bad_severity_values() {
        let (message, column) = err("severity>=loud");
        assert_eq!(
            message,
            "unknown severity `loud`; use trace, debug, info, warn, warning, error, fatal \
             or a number 1 to 24"
        );
        assert_eq!(column, 11);
        assert_err("severity:warn*", "unknown severity `warn*`", 10);
        assert_err("severity>0", "severity number `0` is out of range", 10);
        assert_err("severity<=25", "severity number `25` is out of range", 11);
        assert_err(
            "severity=99999999999",
            "severity number `99999999999` is out of range",
            10,
        );
        assert_err("severity:>=nope", "unknown severity `nope`", 12);
        assert_err("severity>=-1", "unknown severity `-1`", 11);
        assert_err("a severity:\"x y\"", "unknown severity `x y`", 13);
    }

    /// Every sequence of up to four pieces from a tricky alphabet parses or fails with a
    /// column inside the input (or just past its end), and never panics.
    #[test]
    fn no_input_panics_and_error_columns_are_in_range() {
        const PIECES: [&str; 19] = [
            "a", "-", "*", ":", "\"", "\\", "(", ")", " ", "=", ">=", "é", "AND ", "NOT ", "OR ",
            "service", "severity", "attr.k", "5",
        ];
        let mut input = String::new();
        let mut indices = Vec::new();
        loop {
            input.clear();
            for &i in &indices {
                input.push_str(PIECES[i]);
            }
            if let Err(e) = parse(&input) {
                let len = input.chars().count();
                assert!(
                    (1..=len + 1).contains(&e.column),
                    "{input:?}: column {} outside 1..={}",
                    e.column,
                    len + 1
                );
            }
            // Next sequence, counting in base PIECES.len() with growing length.
            let mut position = 0;
            loop {
                if position == indices.len() {
                    indices.push(0);
                    break;
                }
                indices[position] += 1;
                if indices[position] < PIECES.len() {
                    break;
                }
                indices[position] = 0;
                position += 1;
            }
            if indices.len() > 4 {
                break;
            }
        }
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let ok_depth = format!(
            "{}a{}",
            "(".repeat(MAX_DEPTH - 1),
            ")".repeat(MAX_DEPTH - 1)
        );
        assert_eq!(ok(&ok_depth), w("a"));
        assert_err(
            &"(".repeat(100_000),
            "the query nests `NOT`, `-` or parentheses more than 64 deep",
            MAX_DEPTH + 1,
        );
        assert_err(
            &"NOT ".repeat(100_000),
            "the query nests `NOT`, `-` or parentheses more than 64 deep",
            4 * MAX_DEPTH + 1,
        );
    }

    #[test]
    fn error_display_includes_the_column() {
        let Err(error) = parse("a (") else {
            panic!("expected an error");
        };
        assert_eq!(error.to_string(), "missing `)` at column 3");
    }
}
