//! YAML as a tree of nodes that remember their line, so every error in a rule file can
//! name the line it is about (serde's YAML deserializers forget positions after parsing).

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// One YAML node and where it starts (1-based line and column).
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// What the node holds.
    pub kind: Kind,
    /// Line of its first character, from 1.
    pub line: usize,
    /// Column of its first character, from 1.
    pub col: usize,
}

/// What a node holds.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// A scalar's text; `plain` is false when it was quoted or a block scalar.
    Scalar { text: String, plain: bool },
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, in file order.
    Map(Vec<(Node, Node)>),
}

/// A syntax error, with its position.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntaxError {
    /// Line, from 1.
    pub line: usize,
    /// Column, from 1.
    pub col: usize,
    /// What the parser expected.
    pub message: String,
}

impl Node {
    /// The scalar text, when this is a scalar.
    pub fn as_str(&self) -> Option<&str> {
        match &self.kind {
            Kind::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }

    /// True for an empty plain scalar or `null` / `~` (YAML's null).
    pub fn is_null(&self) -> bool {
        matches!(&self.kind, Kind::Scalar { text, plain: true } if text.is_empty() || text == "null" || text == "~" || text == "Null" || text == "NULL")
    }

    /// A word for the node's type, for error messages.
    pub fn type_name(&self) -> &'static str {
        match &self.kind {
            Kind::Scalar { .. } if self.is_null() => "null",
            Kind::Scalar { .. } => "a scalar",
            Kind::Seq(_) => "a list",
            Kind::Map(_) => "a mapping",
        }
    }
}

/// Parses one YAML document. An empty file is a null scalar.
///
/// # Errors
/// The scanner's message and position for malformed YAML; aliases to unknown anchors.
pub fn parse(text: &str) -> Result<Node, SyntaxError> {
    let mut builder = Builder::default();
    let mut parser = Parser::new_from_str(text);
    parser.load(&mut builder, false).map_err(|e| SyntaxError {
        line: e.marker().line(),
        col: e.marker().col() + 1,
        message: e.info().to_string(),
    })?;
    if let Some(err) = builder.error {
        return Err(err);
    }
    Ok(builder.root.unwrap_or(Node {
        kind: Kind::Scalar {
            text: String::new(),
            plain: true,
        },
        line: 1,
        col: 1,
    }))
}

/// A collection being built: its node and, for a mapping, a key waiting for its value.
struct Open {
    node: Node,
    anchor: usize,
    pending_key: Option<Node>,
}

/// Most nodes a document may expand to (aliases count every node they copy), so a file
/// of nested aliases cannot take all memory.
const MAX_NODES: usize = 1_000_000;

#[derive(Default)]
struct Builder {
    stack: Vec<Open>,
    root: Option<Node>,
    anchors: HashMap<usize, Node>,
    error: Option<SyntaxError>,
    nodes: usize,
}

fn count(node: &Node) -> usize {
    1 + match &node.kind {
        Kind::Scalar { .. } => 0,
        Kind::Seq(items) => items.iter().map(count).sum(),
        Kind::Map(entries) => entries.iter().map(|(k, v)| count(k) + count(v)).sum(),
    }
}

impl Builder {
    fn complete(&mut self, node: Node, anchor: usize) {
        if self.error.is_some() {
            return;
        }
        self.nodes += 1;
        if anchor > 0 {
            self.anchors.insert(anchor, node.clone());
        }
        match self.stack.last_mut() {
            None => {
                if self.root.is_none() {
                    self.root = Some(node);
                }
            }
            Some(open) => match &mut open.node.kind {
                Kind::Seq(items) => items.push(node),
                Kind::Map(entries) => match open.pending_key.take() {
                    None => open.pending_key = Some(node),
                    Some(key) => entries.push((key, node)),
                },
                Kind::Scalar { .. } => {}
            },
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let at = |kind| Node {
            kind,
            line: mark.line(),
            col: mark.col() + 1,
        };
        match ev {
            Event::Scalar(text, style, anchor, _) => {
                let plain = style == TScalarStyle::Plain;
                self.complete(at(Kind::Scalar { text, plain }), anchor);
            }
            Event::SequenceStart(anchor, _) => self.stack.push(Open {
                node: at(Kind::Seq(Vec::new())),
                anchor,
                pending_key: None,
            }),
            Event::MappingStart(anchor, _) => self.stack.push(Open {
                node: at(Kind::Map(Vec::new())),
                anchor,
                pending_key: None,
            }),
            Event::SequenceEnd | Event::MappingEnd => {
                if let Some(open) = self.stack.pop() {
                    self.complete(open.node, open.anchor);
                }
            }
            Event::Alias(id) => {
                match self.anchors.get(&id) {
                    Some(anchored) if self.nodes + count(anchored) > MAX_NODES => {
                        self.error.get_or_insert(SyntaxError {
                        line: mark.line(),
                        col: mark.col() + 1,
                        message: format!("the document expands to more than {MAX_NODES} nodes through aliases"),
                    });
                    }
                    Some(anchored) => {
                        let mut node = anchored.clone();
                        self.nodes += count(&node);
                        node.line = mark.line();
                        node.col = mark.col() + 1;
                        self.complete(node, 0);
                    }
                    None => {
                        self.error.get_or_insert(SyntaxError {
                            line: mark.line(),
                            col: mark.col() + 1,
                            message: "alias to an unknown anchor".into(),
                        });
                    }
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_know_their_lines() {
        let doc =
            parse("groups:\n  - name: a\n    rules:\n      - alert: X\n        expr: up == 0\n")
                .unwrap();
        let Kind::Map(top) = &doc.kind else { panic!() };
        assert_eq!(top[0].0.as_str(), Some("groups"));
        let Kind::Seq(groups) = &top[0].1.kind else {
            panic!()
        };
        let Kind::Map(group) = &groups[0].kind else {
            panic!()
        };
        assert_eq!(group[0].1.as_str(), Some("a"));
        assert_eq!(group[0].1.line, 2);
        let Kind::Seq(rules) = &group[1].1.kind else {
            panic!()
        };
        let Kind::Map(rule) = &rules[0].kind else {
            panic!()
        };
        assert_eq!(rule[1].1.as_str(), Some("up == 0"));
        assert_eq!(rule[1].1.line, 5);
    }

    #[test]
    fn syntax_errors_and_aliases() {
        let err = parse("groups:\n  - name: [a\n").unwrap_err();
        assert!(err.line >= 2, "{err:?}");
        let doc = parse("a: &x {k: v}\nb: *x\n").unwrap();
        let Kind::Map(top) = &doc.kind else { panic!() };
        assert_eq!(top[1].1.line, 2);
        assert!(matches!(&top[1].1.kind, Kind::Map(m) if m[0].1.as_str() == Some("v")));
        assert!(parse("").unwrap().is_null());
    }

    #[test]
    fn alias_bombs_are_refused() {
        let mut doc = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let prev = format!("*a{}", i - 1);
            doc.push_str(&format!("a{i}: &a{i} [{}]\n", vec![prev; 10].join(", ")));
        }
        let err = parse(&doc).unwrap_err();
        assert!(err.message.contains("more than"), "{err:?}");
    }
}
