//! Rule files: Prometheus's format (`groups:` of `name`, `interval`, `limit`,
//! `query_offset`, `labels`, `rules:` with `alert`/`record`, `expr`, `for`,
//! `keep_firing_for`, `labels`, `annotations`), plus Periscope's `sql:` and `logs:`
//! expressions. Every problem is reported with its file, line and column, all at once.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use periscope_storage::names::{is_label_name, is_metric_name};

use crate::template;
use crate::yaml::{self, Kind, Node};

/// One problem in a rule file.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    /// The file.
    pub file: PathBuf,
    /// Line, from 1.
    pub line: usize,
    /// Column, from 1.
    pub col: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file.display(),
            self.line,
            self.col,
            self.message
        )
    }
}

/// Every problem found in a set of rule files.
#[derive(Debug, Clone, PartialEq)]
pub struct Problems(pub Vec<Problem>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}

/// A comparison operator in a SQL rule's `condition`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `==`
    Eq,
    /// `!=`
    Ne,
}

/// `value OP threshold`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Condition {
    /// The comparison.
    pub op: CmpOp,
    /// The number compared with.
    pub threshold: f64,
}

impl Condition {
    /// Parses `value > 0.05` (also `>=`, `<`, `<=`, `==`, `!=`).
    ///
    /// # Errors
    /// When the text has another shape.
    pub fn parse(text: &str) -> Result<Condition, String> {
        let bad = || {
            format!(
                "condition {text:?} is not of the form `value > 0.05` (operators: > >= < <= == !=)"
            )
        };
        let rest = text
            .trim()
            .strip_prefix("value")
            .ok_or_else(bad)?
            .trim_start();
        let (op, rest) = [
            (">=", CmpOp::Ge),
            ("<=", CmpOp::Le),
            ("==", CmpOp::Eq),
            ("!=", CmpOp::Ne),
            (">", CmpOp::Gt),
            ("<", CmpOp::Lt),
        ]
        .iter()
        .find_map(|(sym, op)| rest.strip_prefix(sym).map(|r| (*op, r)))
        .ok_or_else(bad)?;
        let threshold = rest.trim().parse::<f64>().map_err(|_| bad())?;
        Ok(Condition { op, threshold })
    }

    /// Whether `value` meets the condition.
    pub fn holds(&self, value: f64) -> bool {
        match self.op {
            CmpOp::Gt => value > self.threshold,
            CmpOp::Ge => value >= self.threshold,
            CmpOp::Lt => value < self.threshold,
            CmpOp::Le => value <= self.threshold,
            CmpOp::Eq => value == self.threshold,
            CmpOp::Ne => value != self.threshold,
        }
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = match self.op {
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Eq => "==",
            CmpOp::Ne => "!=",
        };
        write!(f, "value {op} {}", self.threshold)
    }
}

/// What a rule evaluates.
#[derive(Debug, Clone, PartialEq)]
pub enum RuleExpr {
    /// A PromQL expression (`expr:` or `promql:`): every sample is an instance.
    PromQL(String),
    /// A SQL query (`sql:`): every row is an instance, its non-`value` columns the
    /// labels; `condition` filters rows.
    Sql {
        /// The query.
        query: String,
        /// Rows that fire; all rows when absent.
        condition: Option<Condition>,
    },
    /// A log search (`logs:`): one instance when more than `threshold` lines match in
    /// the last `window`.
    Logs {
        /// The query, in the log query language.
        query: String,
        /// How far back to count.
        window: Duration,
        /// Fires when the count is above this.
        threshold: f64,
    },
}

impl RuleExpr {
    /// The text shown as the rule's `query` in the API.
    pub fn text(&self) -> String {
        match self {
            RuleExpr::PromQL(q) => q.clone(),
            RuleExpr::Sql {
                query,
                condition: Some(c),
            } => format!("{query} [{c}]"),
            RuleExpr::Sql { query, .. } => query.clone(),
            RuleExpr::Logs {
                query,
                window,
                threshold,
            } => format!(
                "count of {query:?} over {} > {threshold}",
                humantime::format_duration(*window)
            ),
        }
    }
}

/// Alerting or recording.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleType {
    /// `alert:`
    Alerting,
    /// `record:`
    Recording,
}

/// One rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// The alert name or recorded metric name.
    pub name: String,
    /// Alerting or recording.
    pub rule_type: RuleType,
    /// What it evaluates.
    pub expr: RuleExpr,
    /// How long an instance stays pending before it fires.
    pub for_: Duration,
    /// How long an instance keeps firing after its condition stops.
    pub keep_firing_for: Duration,
    /// Labels added to each instance (templates for alerting rules).
    pub labels: BTreeMap<String, String>,
    /// Annotations (templates).
    pub annotations: BTreeMap<String, String>,
    /// Line of the rule in its file.
    pub line: usize,
    /// Line of its expression.
    pub expr_line: usize,
}

/// A group of rules evaluated together, in order, at one interval.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    /// The group name, unique in its file.
    pub name: String,
    /// The file it came from.
    pub file: PathBuf,
    /// Evaluation interval; the server's default when absent.
    pub interval: Option<Duration>,
    /// Most alerts (or recorded series) per rule; 0 = no limit.
    pub limit: usize,
    /// Evaluate at this much before the tick, to let late data arrive.
    pub query_offset: Duration,
    /// Labels added to every rule of the group (the rule's own win).
    pub labels: BTreeMap<String, String>,
    /// The rules, in file order.
    pub rules: Vec<Rule>,
}

/// Reads and checks rule files.
///
/// # Errors
/// Every problem in every file (unreadable file, YAML syntax, unknown or mistyped
/// fields, invalid expressions and templates, duplicate groups or rules).
pub fn load_files(paths: &[PathBuf]) -> Result<Vec<Group>, Problems> {
    let (groups, problems) = read_files(paths);
    if problems.is_empty() {
        Ok(groups)
    } else {
        Err(Problems(problems))
    }
}

/// Reads rule files, returning what parsed (rules with problems left out) and every
/// problem, so further checks can run on the rest.
pub fn read_files(paths: &[PathBuf]) -> (Vec<Group>, Vec<Problem>) {
    let mut groups = Vec::new();
    let mut problems = Vec::new();
    let (paths, bad) = expand(paths);
    problems.extend(bad);
    for path in &paths {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let (g, p) = parse_lenient(path, &text);
                groups.extend(g);
                problems.extend(p);
            }
            Err(e) => problems.push(Problem {
                file: path.clone(),
                line: 0,
                col: 0,
                message: format!("cannot read the rule file: {e}"),
            }),
        }
    }
    (groups, problems)
}

/// The files that `paths` name: patterns with `*`, `?` or `[` expand to the files they
/// match, sorted (a pattern matching nothing is no error, as in Prometheus); other paths
/// are kept as they are.
pub fn expand(paths: &[PathBuf]) -> (Vec<PathBuf>, Vec<Problem>) {
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for path in paths {
        let text = path.to_string_lossy();
        if !text.contains(['*', '?', '[']) {
            out.push(path.clone());
            continue;
        }
        match glob::glob(&text) {
            Ok(found) => {
                let mut files: Vec<PathBuf> = found.filter_map(Result::ok).collect();
                files.sort();
                out.extend(files);
            }
            Err(e) => problems.push(Problem {
                file: path.clone(),
                line: 0,
                col: 0,
                message: format!("invalid file pattern: {e}"),
            }),
        }
    }
    (out, problems)
}

/// Parses one rule file's text.
///
/// # Errors
/// Every problem found, with lines.
pub fn parse_file(path: &Path, text: &str) -> Result<Vec<Group>, Problems> {
    let (groups, problems) = parse_lenient(path, text);
    if problems.is_empty() {
        Ok(groups)
    } else {
        Err(Problems(problems))
    }
}

fn parse_lenient(path: &Path, text: &str) -> (Vec<Group>, Vec<Problem>) {
    let mut cx = Checker {
        file: path.to_path_buf(),
        problems: Vec::new(),
    };
    let groups = match yaml::parse(text) {
        Ok(root) => cx.file(&root),
        Err(e) => {
            cx.problems.push(Problem {
                file: path.to_path_buf(),
                line: e.line,
                col: e.col,
                message: format!("YAML syntax error: {}", e.message),
            });
            Vec::new()
        }
    };
    (groups, cx.problems)
}

struct Checker {
    file: PathBuf,
    problems: Vec<Problem>,
}

/// The fields of a mapping, by name, after checking that no unknown or repeated field
/// is present.
struct Fields<'a> {
    entries: Vec<(&'a str, &'a Node)>,
}

impl<'a> Fields<'a> {
    fn get(&self, name: &str) -> Option<&'a Node> {
        self.entries
            .iter()
            .find(|(k, v)| *k == name && !v.is_null())
            .map(|(_, v)| *v)
    }
}

impl Checker {
    fn problem(&mut self, node: &Node, message: impl Into<String>) {
        self.problems.push(Problem {
            file: self.file.clone(),
            line: node.line,
            col: node.col,
            message: message.into(),
        });
    }

    fn fields<'a>(&mut self, node: &'a Node, what: &str, known: &[&str]) -> Option<Fields<'a>> {
        let Kind::Map(entries) = &node.kind else {
            self.problem(
                node,
                format!("{what} must be a mapping, not {}", node.type_name()),
            );
            return None;
        };
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        for (k, v) in entries {
            let Some(name) = k.as_str() else {
                self.problem(k, format!("{what}: field names must be text"));
                continue;
            };
            if !known.contains(&name) {
                self.problem(
                    k,
                    format!(
                        "field {name:?} not found in {what}; known fields: {}",
                        known.join(", ")
                    ),
                );
                continue;
            }
            if !seen.insert(name) {
                self.problem(k, format!("{what}: field {name:?} is given twice"));
                continue;
            }
            out.push((name, v));
        }
        Some(Fields { entries: out })
    }

    fn text(&mut self, node: &Node, what: &str) -> Option<String> {
        match node.as_str() {
            Some(s) => Some(s.to_string()),
            None => {
                self.problem(
                    node,
                    format!("{what} must be text, not {}", node.type_name()),
                );
                None
            }
        }
    }

    fn duration(&mut self, node: &Node, what: &str) -> Option<Duration> {
        let text = self.text(node, what)?;
        match promql_parser::util::parse_duration(&text) {
            Ok(d) => Some(d),
            Err(e) => {
                self.problem(
                    node,
                    format!("{what}: {text:?} is not a duration like 30s, 5m or 1h ({e})"),
                );
                None
            }
        }
    }

    fn string_map(&mut self, node: &Node, what: &str) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let Kind::Map(entries) = &node.kind else {
            self.problem(
                node,
                format!("{what} must be a mapping, not {}", node.type_name()),
            );
            return out;
        };
        for (k, v) in entries {
            let (Some(name), Some(value)) = (k.as_str(), v.as_str()) else {
                self.problem(k, format!("{what}: names and values must be text"));
                continue;
            };
            if !is_label_name(name) {
                self.problem(k, format!("{what}: invalid label name {name:?}"));
                continue;
            }
            if out.insert(name.to_string(), value.to_string()).is_some() {
                self.problem(k, format!("{what}: {name:?} is given twice"));
            }
        }
        out
    }

    fn file(&mut self, root: &Node) -> Vec<Group> {
        if root.is_null() {
            return Vec::new();
        }
        let Some(fields) = self.fields(root, "the rule file", &["groups"]) else {
            return Vec::new();
        };
        let Some(list) = fields.get("groups") else {
            return Vec::new();
        };
        let Kind::Seq(items) = &list.kind else {
            self.problem(list, "groups must be a list");
            return Vec::new();
        };
        let mut names = HashSet::new();
        let mut groups = Vec::new();
        for item in items {
            if let Some(g) = self.group(item) {
                if !names.insert(g.name.clone()) {
                    self.problem(
                        item,
                        format!("groupname: {:?} is repeated in the same file", g.name),
                    );
                    continue;
                }
                groups.push(g);
            }
        }
        groups
    }

    fn group(&mut self, node: &Node) -> Option<Group> {
        let fields = self.fields(
            node,
            "a group",
            &[
                "name",
                "interval",
                "limit",
                "query_offset",
                "labels",
                "rules",
            ],
        )?;
        let name = match fields.get("name") {
            Some(n) => self.text(n, "name")?,
            None => {
                self.problem(node, "a group needs a name");
                return None;
            }
        };
        if name.is_empty() {
            self.problem(node, "group name must not be empty");
        }
        let interval = fields
            .get("interval")
            .and_then(|n| self.duration(n, "interval"));
        if interval == Some(Duration::ZERO)
            && let Some(n) = fields.get("interval")
        {
            self.problem(n, "interval must be more than 0");
        }
        let query_offset = fields
            .get("query_offset")
            .and_then(|n| self.duration(n, "query_offset"))
            .unwrap_or_default();
        let limit = match fields.get("limit") {
            Some(n) => match n.as_str().map(str::parse::<usize>) {
                Some(Ok(l)) => l,
                _ => {
                    self.problem(n, "limit must be a whole number");
                    0
                }
            },
            None => 0,
        };
        let labels = fields
            .get("labels")
            .map(|n| self.string_map(n, "labels"))
            .unwrap_or_default();
        let mut rules = Vec::new();
        if let Some(list) = fields.get("rules") {
            match &list.kind {
                Kind::Seq(items) => {
                    let mut seen: HashSet<(String, BTreeMap<String, String>)> = HashSet::new();
                    for item in items {
                        if let Some(rule) = self.rule(item) {
                            if !seen.insert((rule.name.clone(), rule.labels.clone())) {
                                self.problem(
                                    item,
                                    format!(
                                        "rule {:?} is repeated in group {name:?} with the same labels; its alerts would collide",
                                        rule.name
                                    ),
                                );
                                continue;
                            }
                            rules.push(rule);
                        }
                    }
                }
                _ => self.problem(list, "rules must be a list"),
            }
        }
        Some(Group {
            name,
            file: self.file.clone(),
            interval,
            limit,
            query_offset,
            labels,
            rules,
        })
    }

    fn rule(&mut self, node: &Node) -> Option<Rule> {
        let fields = self.fields(
            node,
            "a rule",
            &[
                "alert",
                "record",
                "expr",
                "promql",
                "sql",
                "condition",
                "logs",
                "for",
                "keep_firing_for",
                "labels",
                "annotations",
            ],
        )?;
        let (rule_type, name_node) = match (fields.get("alert"), fields.get("record")) {
            (Some(n), None) => (RuleType::Alerting, n),
            (None, Some(n)) => (RuleType::Recording, n),
            (Some(_), Some(_)) => {
                self.problem(node, "a rule has either `alert` or `record`, not both");
                return None;
            }
            (None, None) => {
                self.problem(
                    node,
                    "a rule needs `alert` (an alerting rule) or `record` (a recording rule)",
                );
                return None;
            }
        };
        let name = self.text(name_node, "the rule name")?;
        if name.trim().is_empty() {
            self.problem(name_node, "the rule name must not be empty");
        }
        if rule_type == RuleType::Recording && !is_metric_name(&name) {
            self.problem(
                name_node,
                format!("invalid recording rule name {name:?}: it must be a metric name"),
            );
        }
        let exprs: Vec<(&str, &Node)> = ["expr", "promql", "sql", "logs"]
            .iter()
            .filter_map(|k| fields.get(k).map(|n| (*k, n)))
            .collect();
        let (kind, expr_node) = match exprs.as_slice() {
            [one] => *one,
            [] => {
                self.problem(
                    node,
                    format!("rule {name:?} needs an expression: `expr` (PromQL), `sql` or `logs`"),
                );
                return None;
            }
            [_, second, ..] => {
                self.problem(second.1, format!("rule {name:?} has more than one expression; give one of `expr`, `promql`, `sql`, `logs`"));
                return None;
            }
        };
        let condition_node = fields.get("condition");
        if condition_node.is_some() && kind != "sql" {
            self.problem(condition_node?, "`condition` belongs to `sql` rules");
        }
        let expr = match kind {
            "expr" | "promql" => {
                let q = self.text(expr_node, kind)?;
                if let Err(e) = promql_parser::parser::parse(&q) {
                    self.problem(expr_node, format!("invalid PromQL in {kind}: {e}"));
                }
                RuleExpr::PromQL(q)
            }
            "sql" => {
                let q = self.text(expr_node, "sql")?;
                if let Err(e) = check_sql(&q) {
                    self.problem(expr_node, format!("invalid SQL: {e}"));
                }
                let condition = match condition_node {
                    Some(n) => {
                        let t = self.text(n, "condition")?;
                        match Condition::parse(&t) {
                            Ok(c) => Some(c),
                            Err(e) => {
                                self.problem(n, e);
                                None
                            }
                        }
                    }
                    None => None,
                };
                RuleExpr::Sql {
                    query: q,
                    condition,
                }
            }
            _ => self.logs(expr_node)?,
        };
        if rule_type == RuleType::Recording && !matches!(expr, RuleExpr::PromQL(_)) {
            self.problem(expr_node, "recording rules take a PromQL `expr`");
        }
        let for_ = fields
            .get("for")
            .and_then(|n| self.duration(n, "for"))
            .unwrap_or_default();
        let keep_firing_for = fields
            .get("keep_firing_for")
            .and_then(|n| self.duration(n, "keep_firing_for"))
            .unwrap_or_default();
        if rule_type == RuleType::Recording {
            for key in ["for", "keep_firing_for", "annotations"] {
                if let Some(n) = fields.get(key) {
                    self.problem(
                        n,
                        format!("`{key}` belongs to alerting rules, not recording rules"),
                    );
                }
            }
        }
        let labels = fields
            .get("labels")
            .map(|n| self.string_map(n, "labels"))
            .unwrap_or_default();
        let annotations = fields
            .get("annotations")
            .map(|n| self.string_map(n, "annotations"))
            .unwrap_or_default();
        if rule_type == RuleType::Alerting {
            for (what, key) in [("label", "labels"), ("annotation", "annotations")] {
                let Some(Kind::Map(entries)) = fields.get(key).map(|n| &n.kind) else {
                    continue;
                };
                for (k, v) in entries {
                    if let (Some(k), Some(text)) = (k.as_str(), v.as_str())
                        && let Err(e) = template::check(k, text)
                    {
                        self.problem(v, format!("{what} {k:?}: invalid template: {e}"));
                    }
                }
            }
        }
        Some(Rule {
            name,
            rule_type,
            expr,
            for_,
            keep_firing_for,
            labels,
            annotations,
            line: node.line,
            expr_line: expr_node.line,
        })
    }

    fn logs(&mut self, node: &Node) -> Option<RuleExpr> {
        let fields = self.fields(node, "logs", &["query", "window", "threshold"])?;
        let Some(q) = fields.get("query") else {
            self.problem(node, "logs needs a `query` (the log query language)");
            return None;
        };
        let query = self.text(q, "logs.query")?;
        if let Err(e) = periscope_query::logsearch::syntax::parse(&query) {
            self.problem(
                q,
                format!("invalid log query at column {}: {}", e.column, e.message),
            );
        }
        let window = match fields.get("window") {
            Some(n) => self.duration(n, "logs.window")?,
            None => {
                self.problem(node, "logs needs a `window`, e.g. 5m");
                return None;
            }
        };
        if window.is_zero() {
            self.problem(node, "logs.window must be more than 0");
        }
        let threshold = match fields.get("threshold") {
            Some(n) => match n.as_str().map(|s| s.trim().parse::<f64>()) {
                Some(Ok(t)) if t.is_finite() => t,
                _ => {
                    self.problem(n, "logs.threshold must be a number (the rule fires when more lines than this match)");
                    return None;
                }
            },
            None => 0.0,
        };
        Some(RuleExpr::Logs {
            query,
            window,
            threshold,
        })
    }
}

/// Checks that `sql` is one read-only query (tables and columns are checked when the
/// server loads the rule).
fn check_sql(sql: &str) -> Result<(), String> {
    use datafusion::sql::sqlparser::ast::Statement;
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::parser::Parser;
    let statements = Parser::parse_sql(&GenericDialect {}, sql).map_err(|e| e.to_string())?;
    match statements.as_slice() {
        [Statement::Query(_)] => Ok(()),
        [] => Err("the query is empty".into()),
        [_] => Err("only a query (SELECT ...) is allowed".into()),
        _ => Err("give one query, not several".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<Group>, Problems> {
        parse_file(Path::new("r.yml"), text)
    }

    #[test]
    fn a_prometheus_rule_file_loads_unchanged() {
        let text = r#"
groups:
  - name: example
    interval: 30s
    rules:
      - record: job:http_requests:rate5m
        expr: sum by (job) (rate(http_requests_total[5m]))
      - alert: HighErrorRate
        expr: job:http_requests:rate5m > 0.5
        for: 10m
        keep_firing_for: 5m
        labels:
          severity: page
        annotations:
          summary: "High error rate on {{ $labels.job }}"
          description: "{{ $value | humanizePercentage }} of requests fail"
  - name: periscope
    rules:
      - alert: SlowCheckout
        sql: SELECT service_name, avg(duration_ns) / 1e6 AS value FROM spans GROUP BY service_name
        condition: value > 500
      - alert: PaymentErrors
        logs:
          query: 'severity>=error service:payment'
          window: 5m
          threshold: 10
      - alert: Up
        promql: up == 0
"#;
        let groups = parse(text).unwrap();
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0].interval, Some(Duration::from_secs(30)));
        assert_eq!(groups[0].rules[0].rule_type, RuleType::Recording);
        let alert = &groups[0].rules[1];
        assert_eq!(alert.for_, Duration::from_secs(600));
        assert_eq!(alert.keep_firing_for, Duration::from_secs(300));
        assert_eq!(alert.labels["severity"], "page");
        assert_eq!(alert.line, 8);
        let RuleExpr::Sql { condition, .. } = &groups[1].rules[0].expr else {
            panic!()
        };
        assert_eq!(condition.unwrap().to_string(), "value > 500");
        assert_eq!(
            groups[1].rules[1].expr,
            RuleExpr::Logs {
                query: "severity>=error service:payment".into(),
                window: Duration::from_secs(300),
                threshold: 10.0
            }
        );
        assert_eq!(groups[1].rules[2].expr, RuleExpr::PromQL("up == 0".into()));
    }

    fn problems(text: &str) -> Vec<String> {
        parse(text)
            .unwrap_err()
            .0
            .iter()
            .map(|p| p.to_string())
            .collect()
    }

    #[test]
    fn every_problem_names_its_line() {
        let text = "groups:
  - name: a
    rules:
      - alert: BadPromQL
        expr: sum(rate(x[5m])
      - alert: BadSQL
        sql: SELEC 1
      - alert: BadLogs
        logs: {query: 'severity>=', window: 5m}
      - alert: Unknown
        expr: up
        severity: page
      - alert: BadFor
        expr: up
        for: soon
      - alert: BadTemplate
        expr: up
        annotations:
          summary: '{{ $labels.x '
  - name: a
    rules: []
";
        let p = problems(text);
        let has = |prefix: &str, needle: &str| {
            assert!(
                p.iter()
                    .any(|m| m.starts_with(prefix) && m.contains(needle)),
                "no {prefix} ... {needle} in {p:#?}"
            )
        };
        has("r.yml:5:", "invalid PromQL");
        has("r.yml:7:", "invalid SQL");
        has("r.yml:9:", "invalid log query");
        has("r.yml:12:", "field \"severity\" not found");
        has("r.yml:15:", "\"soon\" is not a duration");
        has("r.yml:19:", "invalid template: unclosed action");
        has("r.yml:20:", "groupname: \"a\" is repeated");
        assert_eq!(p.len(), 7, "{p:#?}");
    }

    #[test]
    fn syntax_errors_and_shape_errors() {
        let p = problems("groups:\n  - name: a\n    rules: [\n");
        assert!(
            p[0].starts_with("r.yml:4:") && p[0].contains("YAML syntax error"),
            "{p:?}"
        );
        let p = problems(
            "groups:\n  - name: a\n    rules:\n      - alert: X\n        record: y\n        expr: up\n",
        );
        assert!(p[0].contains("not both"), "{p:?}");
        let p = problems(
            "groups:\n  - name: a\n    rules:\n      - alert: X\n        expr: up\n      - alert: X\n        expr: down\n",
        );
        assert!(
            p[0].starts_with("r.yml:6:") && p[0].contains("repeated"),
            "{p:?}"
        );
        let p = problems(
            "groups:\n  - name: a\n    rules:\n      - record: 'bad name'\n        expr: up\n",
        );
        assert!(p[0].contains("invalid recording rule name"), "{p:?}");
        let p = problems(
            "groups:\n  - name: a\n    rules:\n      - alert: X\n        sql: DELETE FROM spans\n",
        );
        assert!(p[0].contains("only a query"), "{p:?}");
        let p = problems(
            "groups:\n  - name: a\n    rules:\n      - alert: X\n        sql: SELECT 1 AS value\n        condition: value ~ 3\n",
        );
        assert!(
            p[0].starts_with("r.yml:6:") && p[0].contains("condition"),
            "{p:?}"
        );
        // Same name, different labels: Prometheus's usual warning/critical pair.
        let ok = parse(
            "groups:\n  - name: a\n    rules:\n      - alert: X\n        expr: up > 1\n        labels: {severity: warning}\n      - alert: X\n        expr: up > 2\n        labels: {severity: critical}\n",
        );
        assert!(ok.is_ok(), "{ok:?}");
    }

    #[test]
    fn patterns_expand_to_the_files_they_match() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["b.yml", "a.yml", "c.txt"] {
            std::fs::write(dir.path().join(name), "groups: []\n").unwrap();
        }
        let (files, problems) = expand(&[dir.path().join("*.yml"), dir.path().join("none*.yml")]);
        assert!(problems.is_empty());
        assert_eq!(files, [dir.path().join("a.yml"), dir.path().join("b.yml")]);
        let (groups, problems) = read_files(&[dir.path().join("*.yml")]);
        assert!(groups.is_empty() && problems.is_empty());
    }

    #[test]
    fn conditions() {
        let c = Condition::parse("value >= 0.05").unwrap();
        assert!(c.holds(0.05) && !c.holds(0.04));
        assert!(Condition::parse("value != 1").unwrap().holds(2.0));
        assert!(Condition::parse("count > 1").is_err());
    }
}
