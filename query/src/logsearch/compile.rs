//! Log query AST ([`super::syntax::Expr`]) → tantivy query over the log index fields.
//!
//! Text is cut with the index's own tokenizer: a word that yields one token is a term
//! query, one that yields several (`user_id=42`, `결제실패`) a phrase query, and a prefix
//! word a phrase-prefix query on its last token. Text with no searchable characters
//! (`!!!`) constrains nothing, as in Lucene.

use std::ops::Bound;

use periscope_storage::logindex::{LogFields, tokenize};
use tantivy::query::{
    AllQuery, BooleanQuery, EmptyQuery, Occur, PhrasePrefixQuery, PhraseQuery, Query, RangeQuery,
    TermQuery,
};
use tantivy::schema::{Field, IndexRecordOption, Term};

use super::syntax::{CmpOp, Expr, Field as QField, MatchKind};

/// Most index terms a prefix expands to.
const PREFIX_EXPANSIONS: u32 = 10_000;

/// Compiles `expr` for the log index.
pub fn compile(expr: &Expr, fields: &LogFields) -> Box<dyn Query> {
    match expr {
        Expr::All => Box::new(AllQuery),
        Expr::And(parts) => {
            let mut clauses: Vec<(Occur, Box<dyn Query>)> = parts
                .iter()
                .map(|p| match p {
                    Expr::Not(inner) => (Occur::MustNot, compile(inner, fields)),
                    other => (Occur::Must, compile(other, fields)),
                })
                .collect();
            if clauses.iter().all(|(o, _)| *o == Occur::MustNot) {
                clauses.push((Occur::Must, Box::new(AllQuery)));
            }
            Box::new(BooleanQuery::new(clauses))
        }
        Expr::Or(parts) => Box::new(BooleanQuery::new(
            parts
                .iter()
                .map(|p| (Occur::Should, compile(p, fields)))
                .collect(),
        )),
        Expr::Not(inner) => Box::new(BooleanQuery::new(vec![
            (Occur::Must, Box::new(AllQuery) as Box<dyn Query>),
            (Occur::MustNot, compile(inner, fields)),
        ])),
        Expr::Severity { op, number } => {
            let n = i64::from(*number);
            let term = |v: i64| Term::from_field_i64(fields.severity, v);
            let (lo, hi) = match op {
                CmpOp::Eq => (Bound::Included(term(n)), Bound::Included(term(n))),
                CmpOp::Gt => (Bound::Excluded(term(n)), Bound::Unbounded),
                CmpOp::Ge => (Bound::Included(term(n)), Bound::Unbounded),
                CmpOp::Lt => (Bound::Unbounded, Bound::Excluded(term(n))),
                CmpOp::Le => (Bound::Unbounded, Bound::Included(term(n))),
            };
            Box::new(RangeQuery::new(lo, hi))
        }
        Expr::Match { field, text, kind } => match field {
            QField::Body => text_query(fields.body, None, text, *kind),
            QField::Attribute(key) => Box::new(BooleanQuery::new(vec![
                (
                    Occur::Should,
                    text_query(fields.attributes, Some(key), text, *kind),
                ),
                (
                    Occur::Should,
                    text_query(fields.resource, Some(key), text, *kind),
                ),
            ])),
            QField::ResourceAttribute(key) => text_query(fields.resource, Some(key), text, *kind),
            QField::Service => exact_query(fields.service, text, *kind),
            QField::TraceId => exact_query(fields.trace_id, text, *kind),
            QField::SpanId => exact_query(fields.span_id, text, *kind),
            QField::SeverityText => exact_query(fields.severity_text, text, *kind),
        },
    }
}

fn text_term(field: Field, path: Option<&str>, token: &str) -> Term {
    match path {
        Some(path) => {
            let mut term = Term::from_field_json_path(field, path, true);
            term.append_type_and_str(token);
            term
        }
        None => Term::from_field_text(field, token),
    }
}

fn text_query(field: Field, path: Option<&str>, text: &str, kind: MatchKind) -> Box<dyn Query> {
    let tokens = tokenize(text);
    let mut terms: Vec<Term> = tokens.iter().map(|t| text_term(field, path, t)).collect();
    match (kind, terms.len()) {
        // `field:*`: the field has any value.
        (MatchKind::Prefix, 0) if path.is_some() => prefix(text_term(field, path, "")),
        (_, 0) => Box::new(AllQuery),
        (MatchKind::Prefix, 1) => prefix(terms.swap_remove(0)),
        (MatchKind::Prefix, _) => {
            let mut q = PhrasePrefixQuery::new(terms);
            q.set_max_expansions(PREFIX_EXPANSIONS);
            Box::new(q)
        }
        (_, 1) => Box::new(TermQuery::new(
            terms.swap_remove(0),
            IndexRecordOption::Basic,
        )),
        _ => Box::new(PhraseQuery::new(terms)),
    }
}

fn exact_query(field: Field, text: &str, kind: MatchKind) -> Box<dyn Query> {
    let value = text.to_lowercase();
    let term = Term::from_field_text(field, &value);
    match kind {
        // `service:*` (empty prefix): the field has any value.
        MatchKind::Prefix => prefix(term),
        _ if value.is_empty() => Box::new(EmptyQuery),
        _ => Box::new(TermQuery::new(term, IndexRecordOption::Basic)),
    }
}

/// Terms starting with `term`'s value: tantivy turns a one-term phrase prefix into a term
/// range over the dictionary.
fn prefix(term: Term) -> Box<dyn Query> {
    let mut q = PhrasePrefixQuery::new(vec![term]);
    q.set_max_expansions(PREFIX_EXPANSIONS);
    Box::new(q)
}
