//! Where each field of a YAML document is: a map from field path (`spec.http[0].retries`,
//! the same syntax as load errors) to its line in the file.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser};

/// Field path -> 1-based line in the whole file. Keys are the line of the key (`retries:`);
/// sequence items the line of the item (`- name: a`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LineIndex {
    lines: HashMap<String, usize>,
    first_line: usize,
    /// Values written as literal block scalars (`key: |`): the line of their first content
    /// line, so that a position inside the text (a YAML document in a ConfigMap) can be
    /// mapped back to the file.
    blocks: HashMap<String, usize>,
}

enum Frame {
    Map { path: String, key: Option<String> },
    Seq { path: String, next: usize },
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

impl LineIndex {
    /// Indexes `text`, a single YAML document whose first line is line `first_line` of its
    /// file. A syntax error stops indexing; what was indexed before it is kept.
    pub fn build(text: &str, first_line: usize) -> LineIndex {
        let mut index = LineIndex {
            lines: HashMap::new(),
            first_line,
            blocks: HashMap::new(),
        };
        let offset = first_line.saturating_sub(1);
        let mut stack: Vec<Frame> = Vec::new();
        for item in Parser::new_from_str(text) {
            let Ok((event, span)) = item else { break };
            let line = span.start.line() + offset;
            let is_node = matches!(
                event,
                Event::Scalar(..)
                    | Event::MappingStart(..)
                    | Event::SequenceStart(..)
                    | Event::Alias(..)
            );
            if is_node {
                // The path of this node, and whether it is a mapping key.
                let (path, is_key) = match stack.last_mut() {
                    None => (String::new(), false),
                    Some(Frame::Seq { path, next }) => {
                        let p = format!("{path}[{next}]");
                        *next += 1;
                        (p, false)
                    }
                    Some(Frame::Map { path, key }) => match key.take() {
                        Some(k) => (join(path, &k), false),
                        None => {
                            let k = match &event {
                                Event::Scalar(v, ..) => v.to_string(),
                                _ => "?".to_string(),
                            };
                            let p = join(path, &k);
                            *key = Some(k);
                            (p, true)
                        }
                    },
                };
                if is_key || !index.lines.contains_key(&path) {
                    index.lines.entry(path.clone()).or_insert(line);
                }
                if !is_key && let Event::Scalar(_, saphyr_parser::ScalarStyle::Literal, ..) = &event
                {
                    // The parser's span of a block scalar starts at its first content line.
                    index.blocks.insert(path.clone(), line);
                }
                match event {
                    Event::MappingStart(..) if !is_key => {
                        stack.push(Frame::Map { path, key: None })
                    }
                    Event::SequenceStart(..) if !is_key => stack.push(Frame::Seq { path, next: 0 }),
                    // A complex key (a mapping or sequence used as a key): index nothing
                    // inside it, but keep the nesting balanced.
                    Event::MappingStart(..) | Event::SequenceStart(..) => stack.push(Frame::Map {
                        path: format!("{path}?"),
                        key: None,
                    }),
                    _ => {}
                }
            } else if matches!(event, Event::MappingEnd | Event::SequenceEnd) {
                stack.pop();
            }
        }
        index
    }

    /// The line of `path`, or of its nearest indexed ancestor, or the document's first line.
    pub fn line_of(&self, path: &str) -> usize {
        let mut p = path;
        loop {
            if let Some(line) = self.lines.get(p) {
                return *line;
            }
            match p.rfind(['.', '[']) {
                Some(i) => p = &p[..i],
                None => return self.lines.get("").copied().unwrap_or(self.first_line),
            }
        }
    }

    /// For a value written as a literal block scalar (`mesh: |`), the file line of its
    /// first content line: line `n` of the value is line `block_start + n - 1` of the file.
    pub fn block_start(&self, path: &str) -> Option<usize> {
        self.blocks.get(path).copied()
    }

    /// The indexes of the `n` items of the sequence at `list` (`items`), each with paths
    /// relative to its item: what a `kind: List` item's document would have had. One pass
    /// over the index, however many items.
    pub fn items(&self, list: &str, n: usize) -> Vec<LineIndex> {
        let mut out: Vec<LineIndex> = (0..n)
            .map(|i| LineIndex {
                lines: HashMap::new(),
                first_line: self.line_of(&format!("{list}[{i}]")),
                blocks: HashMap::new(),
            })
            .collect();
        let split = |key: &str| -> Option<(usize, String)> {
            let rest = key.strip_prefix(list)?.strip_prefix('[')?;
            let (i, rest) = rest.split_once(']')?;
            let i: usize = i.parse().ok()?;
            let rest = match rest.strip_prefix('.') {
                Some(r) => r.to_string(),
                None if rest.is_empty() => String::new(),
                None => return None,
            };
            Some((i, rest))
        };
        for (key, line) in &self.lines {
            if let Some((i, rest)) = split(key)
                && let Some(item) = out.get_mut(i)
            {
                item.lines.insert(rest, *line);
            }
        }
        for (key, line) in &self.blocks {
            if let Some((i, rest)) = split(key)
                && let Some(item) = out.get_mut(i)
            {
                item.blocks.insert(rest, *line);
            }
        }
        out
    }

    /// The line of exactly `path`, if it is in the document.
    pub fn get(&self, path: &str) -> Option<usize> {
        self.lines.get(path).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: web-vsvc
spec:
  hosts: [web-service]
  http:
  - name: primary
    route:
    - destination:
        host: web-service
        subset: stable
      weight: 100
    retries: {attempts: 3, perTryTimeout: 2s}
";

    #[test]
    fn paths_map_to_lines_with_offset() {
        let idx = LineIndex::build(DOC, 10);
        assert_eq!(idx.get("kind"), Some(11));
        assert_eq!(idx.get("spec.hosts"), Some(15));
        assert_eq!(idx.get("spec.hosts[0]"), Some(15));
        assert_eq!(idx.get("spec.http[0]"), Some(17));
        assert_eq!(idx.get("spec.http[0].name"), Some(17));
        assert_eq!(idx.get("spec.http[0].route[0].destination.host"), Some(20));
        assert_eq!(idx.get("spec.http[0].route[0].weight"), Some(22));
        assert_eq!(idx.get("spec.http[0].retries.perTryTimeout"), Some(23));
    }

    #[test]
    fn literal_block_scalars_know_where_their_content_starts() {
        let doc = "kind: ConfigMap\ndata:\n  mesh: |-\n    accessLogFile: /dev/stdout\n    enableTracing: true\n  other: plain\n";
        let idx = LineIndex::build(doc, 5);
        assert_eq!(idx.get("data.mesh"), Some(7));
        assert_eq!(idx.block_start("data.mesh"), Some(8));
        assert_eq!(idx.block_start("data.other"), None);
    }

    #[test]
    fn unknown_paths_fall_back_to_ancestors() {
        let idx = LineIndex::build(DOC, 1);
        assert_eq!(
            idx.line_of("spec.http[0].route[0].destination.port.number"),
            10
        );
        assert_eq!(idx.line_of("spec.tcp[0]"), 5);
        assert_eq!(idx.line_of("nothing"), 1);
    }
}
