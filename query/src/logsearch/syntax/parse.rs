//! The parser: tokens to an [`Expr`], by recursive descent over the grammar in the
//! module's header ([`super`]), with a nesting limit.

use super::ast::{CmpOp, Expr, Field, MatchKind};
use super::error::ParseError;
use super::lex::{Token, TokenKind, lex};
use super::terms::{
    FieldName, and_of, body_word, field_word, is_field_name_syntax, level_range, or_of,
    resolve_field, split_cmp,
};

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

/// How deeply `NOT`, `-` and groups may nest, so that a hostile query cannot overflow
/// the stack of the thread parsing it.
pub(super) const MAX_DEPTH: usize = 64;

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
