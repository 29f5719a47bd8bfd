//! The terms of a log search query: which names are fields, severity level names and
//! comparison operators, and how `AND`/`OR` operands are flattened.

use super::ast::{CmpOp, Expr, Field, MatchKind};

/// Prefixes of attribute field names; the key after them may contain `-`.
const ATTRIBUTE_PREFIXES: [&str; 4] = ["attributes.", "attr.", "resource.", "resource_attributes."];

pub(super) enum FieldName {
    Severity,
    Field(Field),
}

/// Whether `name` (a run of `[A-Za-z0-9_.-]`) may name a field: no `-`, except in the
/// key of an attribute name.
pub(super) fn is_field_name_syntax(name: &str) -> bool {
    !name.contains('-') || ATTRIBUTE_PREFIXES.iter().any(|p| name.starts_with(p))
}

pub(super) fn resolve_field(name: &str) -> Option<FieldName> {
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
pub(super) fn split_cmp(s: &str) -> Option<(CmpOp, usize, &str)> {
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
pub(super) fn level_range(name: &str) -> Option<(i32, i32)> {
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

pub(super) fn body_word(text: &str) -> Expr {
    field_word(Field::Body, text)
}

/// A word or, when it ends in `*`, a prefix match.
pub(super) fn field_word(field: Field, text: &str) -> Expr {
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

pub(super) fn and_of(operands: Vec<Expr>) -> Expr {
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

pub(super) fn or_of(operands: Vec<Expr>) -> Expr {
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
