//! The lexer: a log search query's characters to tokens (words, phrases, keywords,
//! parentheses and a glued `-`), each with its column.

use super::error::ParseError;

#[derive(Debug, Clone, PartialEq)]
pub(super) enum TokenKind {
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
pub(super) struct Token {
    pub(super) kind: TokenKind,
    /// 1-based, in chars.
    pub(super) column: usize,
}

fn is_word_char(c: char) -> bool {
    !c.is_whitespace() && !matches!(c, '(' | ')' | '"')
}

pub(super) fn lex(input: &str) -> Result<Vec<Token>, ParseError> {
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
