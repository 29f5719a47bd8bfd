//! The tokenizer of log text: the same rules for indexing and for queries.
//!
//! - Runs of letters and digits form a word, lower-cased: `user_id=42` gives `user`,
//!   `id`, `42`; `/api/v1/cart` gives `api`, `v1`, `cart`. A query word that splits into
//!   several tokens is searched as a phrase, so `user_id=42` finds exactly that text.
//! - Chinese, Japanese and Korean text is cut into overlapping bigrams of its characters
//!   (`결제실패` → `결제`, `제실`, `실패`), as Lucene's CJK analyzer does: no dictionary is
//!   needed, and any run of two or more characters is found wherever it occurs, even inside
//!   a longer word without spaces. A lone CJK character is a token of its own.
//! - Emoji and other pictographic symbols are tokens of one character each.
//! - Everything else (spaces, punctuation) separates tokens. Tokens are cut to
//!   [`MAX_TOKEN_BYTES`] bytes.

use tantivy::tokenizer::{Token, TokenStream, Tokenizer};

/// The name the text tokenizer is registered under in every log index.
pub const TEXT_TOKENIZER: &str = "periscope_text";
/// The name of the tokenizer for exact, case-insensitive values (service, ids).
pub const EXACT_TOKENIZER: &str = "periscope_exact";
/// Longest token kept, in bytes; longer words are cut (at a character boundary).
pub const MAX_TOKEN_BYTES: usize = 255;

/// Tokenizer for log bodies and attribute values; see the module documentation.
#[derive(Debug, Clone, Default)]
pub struct TextTokenizer {
    token: Token,
}

/// The token stream of [`TextTokenizer`].
#[derive(Debug)]
pub struct TextTokenStream<'a> {
    text: &'a str,
    pos: usize,
    /// The previous character of a CJK run, with its byte offset.
    cjk_prev: Option<(usize, char)>,
    token: &'a mut Token,
}

impl Tokenizer for TextTokenizer {
    type TokenStream<'a> = TextTokenStream<'a>;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> TextTokenStream<'a> {
        self.token.reset();
        TextTokenStream {
            text,
            pos: 0,
            cjk_prev: None,
            token: &mut self.token,
        }
    }
}

/// Whether `c` belongs to a script written without spaces between words (Han, Kana) or
/// whose words take particles (Hangul): those are indexed as bigrams.
pub fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x1100..=0x11FF      // Hangul Jamo
        | 0x3040..=0x30FF    // Hiragana, Katakana
        | 0x3130..=0x318F    // Hangul compatibility Jamo
        | 0x31F0..=0x31FF    // Katakana extensions
        | 0x3400..=0x4DBF    // CJK extension A
        | 0x4E00..=0x9FFF    // CJK unified ideographs
        | 0xAC00..=0xD7AF    // Hangul syllables
        | 0xF900..=0xFAFF    // CJK compatibility ideographs
        | 0xFF66..=0xFF9F    // half-width Katakana
        | 0x20000..=0x2FA1F) // CJK extensions B–F, compatibility supplement
}

/// Whether `c` is a pictographic symbol (emoji and the like) indexed as its own token.
fn is_symbol(c: char) -> bool {
    let u = c as u32;
    !c.is_alphanumeric()
        && !c.is_whitespace()
        && u >= 0x2190
        && !(0x2000..=0x206F).contains(&u) // general punctuation
        && !(0x3000..=0x303F).contains(&u) // CJK punctuation
        && !(0xFE00..=0xFE0F).contains(&u) // variation selectors
        && !(0xFF00..=0xFF65).contains(&u) // full-width punctuation
        && u != 0x200D // zero-width joiner
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() && !is_cjk(c)
}

impl TextTokenStream<'_> {
    fn emit(&mut self, from: usize, to: usize, lower: bool) {
        let token = &mut *self.token;
        token.position = token.position.wrapping_add(1);
        token.offset_from = from;
        token.offset_to = to;
        token.text.clear();
        let piece = &self.text[from..to];
        if lower {
            if piece.is_ascii() {
                token.text.push_str(piece);
                token.text.make_ascii_lowercase();
            } else {
                for c in piece.chars() {
                    token.text.extend(c.to_lowercase());
                }
            }
        } else {
            token.text.push_str(piece);
        }
        if token.text.len() > MAX_TOKEN_BYTES {
            let mut cut = MAX_TOKEN_BYTES;
            while !token.text.is_char_boundary(cut) {
                cut -= 1;
            }
            token.text.truncate(cut);
        }
    }
}

impl TokenStream for TextTokenStream<'_> {
    fn advance(&mut self) -> bool {
        if let Some((prev_at, _)) = self.cjk_prev.take()
            && let Some(next) = self.text[self.pos..].chars().next()
            && is_cjk(next)
        {
            let end = self.pos + next.len_utf8();
            self.emit(prev_at, end, true);
            self.cjk_prev = Some((self.pos, next));
            self.pos = end;
            return true;
        }
        while let Some(c) = self.text[self.pos..].chars().next() {
            let start = self.pos;
            let end = start + c.len_utf8();
            if is_cjk(c) {
                match self.text[end..].chars().next() {
                    Some(next) if is_cjk(next) => {
                        let after = end + next.len_utf8();
                        self.emit(start, after, true);
                        self.cjk_prev = Some((end, next));
                        self.pos = after;
                    }
                    _ => {
                        self.emit(start, end, true);
                        self.pos = end;
                    }
                }
                return true;
            }
            if is_word_char(c) {
                let rest = &self.text[end..];
                let len = rest
                    .char_indices()
                    .find(|(_, c)| !is_word_char(*c))
                    .map_or(rest.len(), |(i, _)| i);
                self.pos = end + len;
                self.emit(start, self.pos, true);
                return true;
            }
            self.pos = end;
            if is_symbol(c) {
                self.emit(start, end, false);
                return true;
            }
        }
        false
    }

    fn token(&self) -> &Token {
        self.token
    }

    fn token_mut(&mut self) -> &mut Token {
        self.token
    }
}

/// The tokens of `text` under the index's rules, in order.
pub fn tokenize(text: &str) -> Vec<String> {
    let mut tokenizer = TextTokenizer::default();
    let mut stream = tokenizer.token_stream(text);
    let mut out = Vec::new();
    while stream.advance() {
        out.push(stream.token().text.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_lower_cased_and_split_on_punctuation() {
        assert_eq!(
            tokenize("GET /api/v1/Cart user_id=42 E1234: timeout!"),
            [
                "get", "api", "v1", "cart", "user", "id", "42", "e1234", "timeout"
            ]
        );
    }

    #[test]
    fn cjk_runs_become_bigrams() {
        assert_eq!(tokenize("결제실패"), ["결제", "제실", "실패"]);
        assert_eq!(
            tokenize("支付失败 error"),
            ["支付", "付失", "失败", "error"]
        );
        assert_eq!(tokenize("ログイン"), ["ログ", "グイ", "イン"]);
        assert_eq!(tokenize("a 中 b"), ["a", "中", "b"]);
        assert_eq!(
            tokenize("사용자가 로그인했습니다"),
            [
                "사용", "용자", "자가", "로그", "그인", "인했", "했습", "습니", "니다"
            ]
        );
    }

    #[test]
    fn emoji_are_tokens_and_long_words_are_cut() {
        assert_eq!(tokenize("deploy 🚀 done✅"), ["deploy", "🚀", "done", "✅"]);
        let long = "x".repeat(1000);
        assert_eq!(tokenize(&long)[0].len(), MAX_TOKEN_BYTES);
        let long = "é".repeat(200);
        assert!(tokenize(&long)[0].len() <= MAX_TOKEN_BYTES);
    }

    #[test]
    fn positions_and_offsets_follow_the_text() {
        let mut t = TextTokenizer::default();
        let mut s = t.token_stream("ab 결제실패");
        let mut got = Vec::new();
        while s.advance() {
            let tok = s.token();
            got.push((tok.position, tok.offset_from, tok.offset_to));
        }
        assert_eq!(got, [(0, 0, 2), (1, 3, 9), (2, 6, 12), (3, 9, 15)]);
    }
}
