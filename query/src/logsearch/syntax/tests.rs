//! The log search language: what each query parses to, and where errors point.

use super::parse::MAX_DEPTH;
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
