//! Loading multi-document YAML files and directories into [`Manifests`], with `file:line`
//! and the field path in every error.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::lines::LineIndex;
use crate::resource::{Document, KINDS, Manifests, Resource, deserialize_kind, object_label};

/// A place in the manifests: a file and a 1-based line in it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Source {
    pub file: PathBuf,
    pub line: usize,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// Why a file or a document could not be loaded. Every variant says where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    #[error("{}: cannot read: {message}", path.display())]
    Io { path: PathBuf, message: String },
    #[error("{}: no *.yaml or *.yml files found", path.display())]
    NoManifests { path: PathBuf },
    #[error("{at}: YAML syntax error: {message}")]
    Syntax { at: Source, message: String },
    /// A document that is not a mapping, or whose `kind`/`apiVersion` is missing or not a
    /// string.
    #[error("{at}: {message}")]
    NotAnObject { at: Source, message: String },
    #[error(
        "{at}: unknown kind \"{kind}\" (apiVersion {api_version}): skein does not know this kind and no CustomResourceDefinition in the manifests defines it; skein reads {}",
        known_kinds()
    )]
    UnknownKind {
        at: Source,
        kind: String,
        api_version: String,
    },
    #[error(
        "{at}: {object}: apiVersion \"{api_version}\" is not supported for kind {kind}; use {}",
        supported_versions(kind)
    )]
    UnsupportedApiVersion {
        at: Source,
        object: String,
        kind: String,
        api_version: String,
    },
    /// A field with an unknown name, a wrong type, a bad enum value, a malformed duration...
    #[error("{at}: {object}: {path}: {message}")]
    Field {
        at: Source,
        object: String,
        path: String,
        message: String,
    },
}

fn known_kinds() -> String {
    let mut kinds: Vec<&str> = Vec::new();
    // Two groups have a Gateway: name it once. A custom object is never written as such.
    for (k, _) in KINDS {
        if *k != "CustomObject" && !kinds.contains(k) {
            kinds.push(k);
        }
    }
    kinds.push("List");
    kinds.join(", ")
}

fn supported_versions(kind: &str) -> String {
    KINDS
        .iter()
        .filter(|(k, _)| *k == kind)
        .flat_map(|(_, v)| v.iter().copied())
        .collect::<Vec<_>>()
        .join(" or ")
}

impl LoadError {
    /// Where the error is (`None` for a file that could not be read).
    pub fn at(&self) -> Option<&Source> {
        match self {
            LoadError::Io { .. } | LoadError::NoManifests { .. } => None,
            LoadError::Syntax { at, .. }
            | LoadError::NotAnObject { at, .. }
            | LoadError::UnknownKind { at, .. }
            | LoadError::UnsupportedApiVersion { at, .. }
            | LoadError::Field { at, .. } => Some(at),
        }
    }
}

/// All the errors of one load, in file and line order. Displays one per line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct LoadErrors(pub Vec<LoadError>);

impl fmt::Display for LoadErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl LoadErrors {
    pub fn iter(&self) -> std::slice::Iter<'_, LoadError> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl IntoIterator for LoadErrors {
    type Item = LoadError;
    type IntoIter = std::vec::IntoIter<LoadError>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'a> IntoIterator for &'a LoadErrors {
    type Item = &'a LoadError;
    type IntoIter = std::slice::Iter<'a, LoadError>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// Loads a file, or every `*.yaml`/`*.yml` under a directory (recursively, in sorted path
/// order, skipping names that start with `.`). Collects every error rather than stopping
/// at the first.
pub fn load_path(path: &Path) -> Result<Manifests, LoadErrors> {
    into_result(load_path_partial(path))
}

/// Loads YAML text; `name` is the file name used in messages (e.g. `-` for stdin).
pub fn load_str(name: &str, text: &str) -> Result<Manifests, LoadErrors> {
    into_result(load_str_partial(name, text))
}

/// Like [`load_path`], but also returns the documents that did load.
pub fn load_path_partial(path: &Path) -> (Manifests, Vec<LoadError>) {
    let mut manifests = Manifests::default();
    let mut errors = Vec::new();
    let files = if path.is_dir() {
        let mut files = Vec::new();
        if let Err(e) = collect_files(path, &mut files) {
            errors.push(e);
        }
        files.sort();
        if files.is_empty() && errors.is_empty() {
            errors.push(LoadError::NoManifests {
                path: path.to_path_buf(),
            });
        }
        files
    } else {
        vec![path.to_path_buf()]
    };
    let mut pending = Vec::new();
    for file in files {
        match std::fs::read(&file) {
            Ok(bytes) => match String::from_utf8(bytes) {
                Ok(text) => load_text(&file, &text, &mut manifests, &mut errors, &mut pending),
                Err(_) => errors.push(LoadError::Io {
                    path: file,
                    message: "not UTF-8 text".into(),
                }),
            },
            Err(e) => errors.push(LoadError::Io {
                path: file,
                message: e.to_string(),
            }),
        }
    }
    resolve_custom_kinds(&mut manifests, &mut errors, pending);
    (manifests, errors)
}

/// Like [`load_str`], but also returns the documents that did load.
pub fn load_str_partial(name: &str, text: &str) -> (Manifests, Vec<LoadError>) {
    let mut manifests = Manifests::default();
    let mut errors = Vec::new();
    let mut pending = Vec::new();
    load_text(
        Path::new(name),
        text,
        &mut manifests,
        &mut errors,
        &mut pending,
    );
    resolve_custom_kinds(&mut manifests, &mut errors, pending);
    (manifests, errors)
}

/// An object of a kind skein does not know, kept until every file is loaded: a
/// CustomResourceDefinition among them may define it.
struct Pending {
    value: serde_norway::Value,
    lines: LineIndex,
    source: Source,
    error: LoadError,
}

/// Loads the pending objects whose kind a CustomResourceDefinition of the manifests defines
/// (group and a version it lists) as [`Resource::CustomObject`]; the others stay errors. The
/// errors are then put in file and line order.
fn resolve_custom_kinds(
    manifests: &mut Manifests,
    errors: &mut Vec<LoadError>,
    pending: Vec<Pending>,
) {
    if !pending.is_empty() {
        let defined: Vec<(String, String, Vec<String>)> = manifests
            .custom_resource_definitions()
            .filter_map(|c| c.defines())
            .collect();
        for p in pending {
            let LoadError::UnknownKind {
                kind, api_version, ..
            } = &p.error
            else {
                errors.push(p.error);
                continue;
            };
            let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
            let known = defined
                .iter()
                .any(|(g, k, vs)| g == group && k == kind && vs.iter().any(|v| v == version));
            if !known {
                errors.push(p.error);
                continue;
            }
            match serde_path_to_error::deserialize::<_, crate::kept::CustomObject>(p.value) {
                Ok(o) => manifests.documents.push(Document {
                    source: p.source,
                    resource: Resource::CustomObject(o),
                    lines: p.lines,
                }),
                Err(e) => {
                    let path = e.path().to_string();
                    errors.push(LoadError::Field {
                        at: Source {
                            file: p.source.file.clone(),
                            line: p.lines.line_of(&path),
                        },
                        object: object_label(kind, None, ""),
                        path,
                        message: e.into_inner().to_string(),
                    });
                }
            }
        }
    }
    errors.sort_by(|a, b| {
        let key = |e: &LoadError| match e {
            LoadError::Io { path, .. } | LoadError::NoManifests { path } => (path.clone(), 0),
            other => other
                .at()
                .map_or((PathBuf::new(), 0), |s| (s.file.clone(), s.line)),
        };
        key(a).cmp(&key(b))
    });
}

fn into_result((manifests, errors): (Manifests, Vec<LoadError>)) -> Result<Manifests, LoadErrors> {
    if errors.is_empty() {
        Ok(manifests)
    } else {
        Err(LoadErrors(errors))
    }
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), LoadError> {
    let io = |e: std::io::Error| LoadError::Io {
        path: dir.to_path_buf(),
        message: e.to_string(),
    };
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let path = entry.path();
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        if path.is_dir() {
            collect_files(&path, out)?;
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        ) {
            out.push(path);
        }
    }
    Ok(())
}

/// One document's text (with the file's line structure kept) and its first line.
struct RawDocument {
    first_line: usize,
    text: String,
}

/// Splits at lines that are `---` (optionally followed by a space and more), blanking the
/// marker so that line numbers inside each document stay those of the file. `...` lines
/// and `%` directives are blanked too.
fn split_documents(text: &str) -> Vec<RawDocument> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut docs = Vec::new();
    let mut current = RawDocument {
        first_line: 1,
        text: String::new(),
    };
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let content = line.trim_end_matches(['\n', '\r']);
        let is_marker =
            content == "---" || content.starts_with("--- ") || content.starts_with("---\t");
        if is_marker {
            docs.push(std::mem::replace(
                &mut current,
                RawDocument {
                    first_line: i + 1,
                    text: String::new(),
                },
            ));
            current.text.push_str("   ");
            current.text.push_str(&line[3..]);
        } else if content == "..." || content.starts_with('%') {
            current.text.push('\n');
        } else {
            current.text.push_str(line);
        }
    }
    docs.push(current);
    docs
}

fn load_text(
    file: &Path,
    text: &str,
    manifests: &mut Manifests,
    errors: &mut Vec<LoadError>,
    pending: &mut Vec<Pending>,
) {
    for mut raw in split_documents(text) {
        quote_flow_colons(&mut raw.text);
        match load_document(file, &raw) {
            Ok(Loaded::One(doc)) => manifests.documents.push(*doc),
            Ok(Loaded::List(items)) => {
                for item in items {
                    match item {
                        Ok(doc) => manifests.documents.push(doc),
                        Err(Unknown::Pending(p)) => pending.push(*p),
                        Err(Unknown::Error(e)) => errors.push(e),
                    }
                }
            }
            Ok(Loaded::Empty) => {}
            Err(Unknown::Pending(p)) => pending.push(*p),
            Err(Unknown::Error(e)) => errors.push(e),
        }
    }
}

/// What one YAML document held.
enum Loaded {
    Empty,
    One(Box<Document>),
    /// A `kind: List`: each item as if it were its own document.
    List(Vec<Result<Document, Unknown>>),
}

/// A document that did not load: an error, or a kind to look for among the CRDs.
enum Unknown {
    Error(LoadError),
    Pending(Box<Pending>),
}

impl From<LoadError> for Unknown {
    fn from(e: LoadError) -> Unknown {
        Unknown::Error(e)
    }
}

/// An item of a `kind: List`, loaded as if it were its own document: its `file:line` is the
/// item's, its field paths start at the item.
fn load_list_item(
    file: &Path,
    value: &serde_norway::Value,
    lines: LineIndex,
) -> Result<Document, Unknown> {
    let at = |line: usize| Source {
        file: file.to_path_buf(),
        line,
    };
    let doc_line = lines.line_of("");
    let Some(map) = value.as_mapping() else {
        return Err(LoadError::NotAnObject {
            at: at(doc_line),
            message: "expected a Kubernetes object (a mapping with apiVersion and kind) in `items`"
                .into(),
        }
        .into());
    };
    let (kind, api_version, object) = identify(map, &lines, &at)?;
    check_kind(&kind, &api_version, &object, &lines, &at, value)?;
    match deserialize_kind(&kind, &api_version, value.clone()) {
        Some(Ok(resource)) => Ok(Document {
            source: at(doc_line),
            resource,
            lines,
        }),
        Some(Err(e)) => {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let message = clean_message(&inner, &path, 0);
            let path = if path == "." { String::new() } else { path };
            Err(LoadError::Field {
                at: at(lines.line_of(&path)),
                object,
                path,
                message,
            }
            .into())
        }
        None => Err(unreachable_kind(at(doc_line), kind, api_version).into()),
    }
}

/// `kind`, `apiVersion` and the object's label (`Kind ns/name`) of a document's mapping.
fn identify(
    map: &serde_norway::Mapping,
    lines: &LineIndex,
    at: &dyn Fn(usize) -> Source,
) -> Result<(String, String, String), LoadError> {
    let doc_line = lines.line_of("");
    let field = |key: &str| -> Result<String, LoadError> {
        match map.get(key) {
            Some(serde_norway::Value::String(s)) if !s.is_empty() => Ok(s.clone()),
            Some(_) => Err(LoadError::NotAnObject {
                at: at(lines.line_of(key)),
                message: format!("`{key}` must be a non-empty string"),
            }),
            None => Err(LoadError::NotAnObject {
                at: at(doc_line),
                message: format!("missing `{key}`: every object needs apiVersion and kind"),
            }),
        }
    };
    let kind = field("kind")?;
    let api_version = field("apiVersion")?;
    let meta = map.get("metadata");
    let meta_str = |key: &str| {
        meta.and_then(|m| m.get(key))
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string()
    };
    let name = meta_str("name");
    let namespace = meta_str("namespace");
    let namespace = (!crate::resource::cluster_scoped(&kind)).then_some(if namespace.is_empty() {
        "default"
    } else {
        namespace.as_str()
    });
    let object = object_label(&kind, namespace, &name);
    Ok((kind, api_version, object))
}

/// The kind is one skein reads, with an apiVersion it accepts; an unknown kind is kept
/// pending (a CRD of the manifests may define it).
fn check_kind(
    kind: &str,
    api_version: &str,
    object: &str,
    lines: &LineIndex,
    at: &dyn Fn(usize) -> Source,
    value: &serde_norway::Value,
) -> Result<(), Unknown> {
    if !KINDS
        .iter()
        .any(|(k, _)| *k == kind && *k != "CustomObject")
    {
        let error = LoadError::UnknownKind {
            at: at(lines.line_of("kind")),
            kind: kind.to_string(),
            api_version: api_version.to_string(),
        };
        return Err(Unknown::Pending(Box::new(Pending {
            value: value.clone(),
            lines: lines.clone(),
            source: at(lines.line_of("")),
            error,
        })));
    }
    // A kind may be in several groups (Istio's and the Gateway API's Gateway).
    if !KINDS
        .iter()
        .any(|(k, apis)| *k == kind && apis.contains(&api_version))
    {
        return Err(LoadError::UnsupportedApiVersion {
            at: at(lines.line_of("apiVersion")),
            object: object.to_string(),
            kind: kind.to_string(),
            api_version: api_version.to_string(),
        }
        .into());
    }
    Ok(())
}

fn load_document(file: &Path, raw: &RawDocument) -> Result<Loaded, Unknown> {
    let offset = raw.first_line - 1;
    let at = |line: usize| Source {
        file: file.to_path_buf(),
        line,
    };

    // 1. Generic parse: syntax errors, duplicate keys, empty documents.
    let generic: Result<serde_norway::Value, _> =
        serde_path_to_error::deserialize(serde_norway::Deserializer::from_str(&raw.text));
    let value = match generic {
        Ok(v) => v,
        Err(e) => {
            let path = e.path().to_string();
            let inner = e.into_inner();
            // The parser puts the end of a text without a final line break on the line after
            // it: point at the document's last line instead.
            let last_line = raw.first_line + yaml_line_breaks(&raw.text);
            let line = inner
                .location()
                .map_or(raw.first_line, |l| (l.line() + offset).min(last_line));
            let message = clean_message(&inner, &path, offset);
            return Err(LoadError::Syntax {
                at: at(line),
                message,
            }
            .into());
        }
    };
    let map = match &value {
        serde_norway::Value::Null => return Ok(Loaded::Empty),
        serde_norway::Value::Mapping(m) => m,
        other => {
            let found = match other {
                serde_norway::Value::Sequence(_) => "a list",
                _ => "a scalar",
            };
            let lines = LineIndex::build(&raw.text, raw.first_line);
            return Err(LoadError::NotAnObject {
                at: at(lines.line_of("")),
                message: format!(
                    "expected a Kubernetes object (a mapping with apiVersion and kind), found {found}"
                ),
            }
            .into());
        }
    };
    let lines = LineIndex::build(&raw.text, raw.first_line);
    let doc_line = lines.line_of("");
    let (kind, api_version, object) = identify(map, &lines, &at)?;

    // 2. A List: each item as its own document.
    if kind == "List" && api_version == "v1" {
        let items = match map.get("items") {
            None | Some(serde_norway::Value::Null) => Vec::new(),
            Some(serde_norway::Value::Sequence(items)) => items.clone(),
            Some(_) => {
                return Err(LoadError::Field {
                    at: at(lines.line_of("items")),
                    object,
                    path: "items".into(),
                    message: "expected a list of objects".into(),
                }
                .into());
            }
        };
        let loaded = items
            .iter()
            .zip(lines.items("items", items.len()))
            .map(|(item, item_lines)| load_list_item(file, item, item_lines))
            .collect();
        return Ok(Loaded::List(loaded));
    }

    // 3. Kind and apiVersion.
    check_kind(&kind, &api_version, &object, &lines, &at, &value)?;

    // 4. The typed object, with the path of any error.
    let de = serde_norway::Deserializer::from_str(&raw.text);
    match deserialize_kind(&kind, &api_version, de) {
        Some(Ok(resource)) => Ok(Loaded::One(Box::new(Document {
            source: at(doc_line),
            resource,
            lines,
        }))),
        Some(Err(e)) => {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let line = inner
                .location()
                .map_or_else(|| lines.line_of(&path), |l| l.line() + offset);
            let message = clean_message(&inner, &path, offset);
            let path = if path == "." { String::new() } else { path };
            Err(LoadError::Field {
                at: at(line),
                object,
                path,
                message,
            }
            .into())
        }
        None => Err(unreachable_kind(at(doc_line), kind, api_version).into()),
    }
}

// KINDS and deserialize_kind are generated from the same list, so this does not happen;
// report it as an unknown kind rather than panic.
fn unreachable_kind(at: Source, kind: String, api_version: String) -> LoadError {
    LoadError::UnknownKind {
        at,
        kind,
        api_version,
    }
}

/// At most this many plain scalars of one document are quoted by [`quote_flow_colons`].
const MAX_FLOW_COLON_FIXES: usize = 256;

/// Kubernetes' YAML parser reads a plain scalar in a flow collection whose `:` is followed by
/// a flow indicator (`addresses: [1.2.3.4, 2001:db8::]`) as one string, as YAML 1.2 allows;
/// libyaml, which the YAML crate ports, refuses it ("found unexpected ':'"). For each such
/// refusal this quotes that scalar in place (`'2001:db8::'`), which keeps every line where it
/// is, and parses again. Anything else is left to the loader's own error.
fn quote_flow_colons(text: &mut String) {
    for _ in 0..MAX_FLOW_COLON_FIXES {
        let Err(e) = serde_norway::from_str::<serde::de::IgnoredAny>(text) else {
            return;
        };
        let msg = e.to_string();
        let Some((line, column)) = plain_scalar_start(&msg) else {
            return;
        };
        if !msg.starts_with("found unexpected ':'") || !quote_plain_scalar_at(text, line, column) {
            return;
        }
    }
}

/// `(line, column)` (1-based) of "while scanning a plain scalar at line L column C".
fn plain_scalar_start(msg: &str) -> Option<(usize, usize)> {
    let rest = msg.split("while scanning a plain scalar at line ").nth(1)?;
    let (line, rest) = rest.split_once(" column ")?;
    let column: String = rest.chars().take_while(char::is_ascii_digit).collect();
    Some((line.parse().ok()?, column.parse().ok()?))
}

/// Wraps the plain scalar that starts at `line`:`column` (characters, 1-based) in single
/// quotes: up to the end of the line, a `,`, `[`, `]`, `{`, `}`, or a `:` or ` #` followed
/// by a blank. False if there is no such scalar there.
fn quote_plain_scalar_at(text: &mut String, line: usize, column: usize) -> bool {
    let Some(line_start) = (if line <= 1 {
        Some(0)
    } else {
        text.match_indices('\n').nth(line - 2).map(|(i, _)| i + 1)
    }) else {
        return false;
    };
    let line_text = &text[line_start..];
    let line_text = &line_text[..line_text.find('\n').unwrap_or(line_text.len())];
    let Some((start, _)) = line_text.char_indices().nth(column.saturating_sub(1)) else {
        return false;
    };
    let bytes = line_text.as_bytes();
    let mut end = start;
    while end < bytes.len() {
        let b = bytes[end];
        let next_blank = bytes
            .get(end + 1)
            .is_none_or(|n| matches!(n, b' ' | b'\t' | b'\r'));
        if matches!(b, b',' | b'[' | b']' | b'{' | b'}' | b'\r')
            || (b == b':' && next_blank)
            || (b == b'#' && end > start && matches!(bytes[end - 1], b' ' | b'\t'))
        {
            break;
        }
        end += 1;
    }
    let scalar = line_text[start..end].trim_end_matches([' ', '\t']);
    if scalar.is_empty() || scalar.starts_with(['\'', '"']) {
        return false;
    }
    let quoted = format!("'{}'", scalar.replace('\'', "''"));
    let at = line_start + start;
    text.replace_range(at..at + scalar.len(), &quoted);
    true
}

/// Line breaks as YAML counts them: CR LF, or CR, LF, NEL, LS or PS alone.
fn yaml_line_breaks(text: &str) -> usize {
    let crlf = text.matches("\r\n").count();
    text.matches(['\r', '\n', '\u{85}', '\u{2028}', '\u{2029}'])
        .count()
        - crlf
}

/// Turns a serde_norway message into the text after `file:line: object: path: `:
/// - drops the YAML library's own path prefix and its ` at line L column C` (the line is
///   already in front, counted in the whole file; other line numbers are shifted to it),
/// - `unknown field `x`, expected one of `a`, `b`` becomes
///   `unknown field "x", expected one of a, b`,
/// - Rust type names become words (`expected i32` -> `expected an integer`).
fn clean_message(error: &serde_norway::Error, path: &str, offset: usize) -> String {
    let mut msg = error.to_string();
    // The library's own path prefix (it names the parent for unknown fields).
    let mut prefixes: Vec<&str> = vec![path];
    let mut p = path;
    while let Some(i) = p.rfind(['.', '[']) {
        p = &p[..i];
        prefixes.push(p);
    }
    for prefix in prefixes {
        if !prefix.is_empty()
            && let Some(rest) = msg.strip_prefix(prefix).and_then(|r| r.strip_prefix(": "))
        {
            msg = rest.to_string();
            break;
        }
    }
    // Drop the position of the error itself (it is in front of the message already).
    if let Some(loc) = error.location() {
        let own = format!(" at line {} column {}", loc.line(), loc.column());
        if let Some(i) = msg.find(&own) {
            msg.replace_range(i..i + own.len(), "");
        }
    }
    let msg = shift_line_numbers(&msg, offset);
    // Backticks: the first quoted name keeps quotes, the list after it loses them.
    let mut out = String::with_capacity(msg.len());
    let mut first = true;
    let mut parts = msg.split('`');
    if let Some(head) = parts.next() {
        out.push_str(head);
    }
    let mut inside = true;
    for part in parts {
        if inside {
            if first {
                out.push('"');
                out.push_str(part);
                out.push('"');
                first = false;
            } else {
                out.push_str(part);
            }
        } else {
            out.push_str(part);
        }
        inside = !inside;
    }
    for (rust, word) in [
        ("expected i32", "expected an integer"),
        ("expected i64", "expected an integer"),
        ("expected u32", "expected a non-negative integer"),
        ("expected u64", "expected a non-negative integer"),
        ("expected u16", "expected a non-negative integer"),
        ("expected f64", "expected a number"),
        ("expected a sequence", "expected a list"),
        ("expected a map", "expected a mapping"),
    ] {
        if out.ends_with(rust) {
            out.truncate(out.len() - rust.len());
            out.push_str(word);
        }
    }
    // `expected struct HttpRetry` names a Rust type: say what the YAML should be.
    if let Some(i) = out.find("expected struct ") {
        let name_end = out[i + 16..]
            .find(|c: char| !c.is_alphanumeric())
            .map_or(out.len(), |j| i + 16 + j);
        out.replace_range(i..name_end, "expected a mapping");
    }
    out
}

fn shift_line_numbers(msg: &str, offset: usize) -> String {
    if offset == 0 {
        return msg.to_string();
    }
    let mut out = String::with_capacity(msg.len());
    let mut rest = msg;
    while let Some(i) = rest.find("line ") {
        let (head, tail) = rest.split_at(i + 5);
        out.push_str(head);
        let digits = tail.len() - tail.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        match tail[..digits].parse::<usize>() {
            Ok(n) => out.push_str(&(n + offset).to_string()),
            Err(_) => out.push_str(&tail[..digits]),
        }
        rest = &tail[digits..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod whole_systems;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Resource;

    fn errors(text: &str) -> Vec<String> {
        match load_str("t.yaml", text) {
            Ok(m) => panic!("expected errors, loaded {} documents", m.len()),
            Err(e) => e.iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn ipv6_addresses_in_a_flow_sequence_load_as_kubernetes_reads_them() {
        // Istio's ServiceEntry test data writes `addresses: [1.2.3.4, 001:db8::]`.
        let text = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: s}\nspec:\n  hosts: [a.example.com]\n  addresses: [1.2.3.4, 001:db8::, \"::1\", 2001:db8::/32]\n  ports: [{number: 80, name: http, protocol: HTTP}]\n  endpoints: [{address: 2001:db8::1}, {address: 'fe80::1', labels: {a: b}}]\n  exportTo: [.]\n";
        let m = load_str("t.yaml", text).unwrap();
        let se = m.service_entries().next().unwrap();
        assert_eq!(
            se.spec.addresses,
            vec!["1.2.3.4", "001:db8::", "::1", "2001:db8::/32"]
        );
        let eps: Vec<&str> = se
            .spec
            .endpoints
            .iter()
            .map(|e| e.address.as_deref().unwrap_or(""))
            .collect();
        assert_eq!(eps, vec!["2001:db8::1", "fe80::1"]);
        // Lines are unchanged.
        assert_eq!(m.documents[0].line_of("spec.addresses[1]"), 6);
        assert_eq!(m.documents[0].line_of("spec.exportTo"), 9);
        // A colon-ended key in a flow mapping that is really wrong still fails, on its line.
        let errs = errors("apiVersion: v1\nkind: Namespace\nmetadata: {name: [a:]]}\n");
        assert!(errs[0].starts_with("t.yaml:3: "), "{errs:?}");
    }

    #[test]
    fn splits_documents_and_keeps_file_lines() {
        let text = "# leading comment\n---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\n---\n---\n# only a comment\n--- \napiVersion: v1\nkind: ServiceAccount\nmetadata: {name: web, namespace: a}\n...\n";
        let m = load_str("t.yaml", text).unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m.documents[0].source.line, 3);
        assert_eq!(m.documents[1].source.line, 11);
        assert_eq!(m.documents[1].resource.kind(), "ServiceAccount");
        assert_eq!(m.documents[1].resource.namespace(), "a");
        assert_eq!(m.documents[0].resource.namespace(), "");
        assert_eq!(m.documents[0].line_of("metadata.name"), 6);
    }

    #[test]
    fn unknown_field_deep_in_a_virtual_service() {
        let text = "apiVersion: v1\nkind: Namespace\nmetadata: {name: blog-system}\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: web-vsvc\n  namespace: blog-system\nspec:\n  hosts: [web-service]\n  http:\n  - name: primary\n    route:\n    - destination: {host: web-service}\n    retries:\n      attemps: 3\n";
        assert_eq!(
            errors(text),
            vec![
                "t.yaml:17: VirtualService blog-system/web-vsvc: spec.http[0].retries.attemps: unknown field \"attemps\", expected one of attempts, perTryTimeout, retryOn, retryRemoteLocalities, retryIgnorePreviousHosts, backoff"
            ]
        );
    }

    #[test]
    fn unknown_kind_names_the_kind_line() {
        let text = "---\napiVersion: v1\nmetadata: {name: x}\nkind: Pdo\n";
        let errs = errors(text);
        assert_eq!(errs.len(), 1);
        assert!(errs[0].starts_with("t.yaml:4: unknown kind \"Pdo\" (apiVersion v1): skein does not know this kind and no CustomResourceDefinition in the manifests defines it; skein reads Namespace, ServiceAccount, Service,"), "{}", errs[0]);
        assert!(errs[0].ends_with(", List"), "{}", errs[0]);
        assert!(!errs[0].contains("CustomObject"), "{}", errs[0]);
    }

    #[test]
    fn a_list_loads_each_item_with_its_own_line() {
        let text = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: ServiceAccount\n  metadata: {name: a, namespace: n}\n- apiVersion: v1\n  kind: Service\n  metadata:\n    name: b\n  spec:\n    ports: [{port: 80}]\n- apiVersion: v1\n  kind: Service\n  metadata: {name: c}\n  spec:\n    ports: [{port: http}]\n- apiVersion: v1\n  kind: Nope\n";
        let (m, errs) = load_str_partial("t.yaml", text);
        let names: Vec<&str> = m.iter().map(|d| d.resource.name()).collect();
        assert_eq!(names, vec!["a", "b"]);
        assert_eq!(m.documents[0].source.line, 4);
        assert_eq!(m.documents[1].source.line, 7);
        assert_eq!(m.documents[1].line_of("spec.ports[0].port"), 12);
        let errs: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert_eq!(
            errs[0],
            "t.yaml:17: Service default/c: spec.ports[0].port: invalid type: string \"http\", expected an integer"
        );
        assert!(
            errs[1].starts_with("t.yaml:19: unknown kind \"Nope\""),
            "{}",
            errs[1]
        );
    }

    #[test]
    fn a_kind_a_crd_of_the_bundle_defines_loads_in_any_order() {
        let cr = "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w, namespace: n}\nspec: {size: 3}\n";
        let crd = "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {name: widgets.example.com}\nspec:\n  group: example.com\n  names: {kind: Widget, plural: widgets}\n  scope: Namespaced\n  versions:\n  - {name: v1, served: true, storage: true}\n";
        let m = load_str("t.yaml", &format!("{cr}---\n{crd}")).unwrap();
        assert_eq!(m.len(), 2);
        let w = m.custom_objects().next().unwrap();
        assert_eq!(w.kind, "Widget");
        assert_eq!(w.fields["spec"]["size"], 3);
        // Another version than the CRD serves is still unknown.
        let errs = errors(&format!("{crd}---\n{}", cr.replace("/v1", "/v2")));
        assert!(
            errs[0].starts_with("t.yaml:12: unknown kind \"Widget\" (apiVersion example.com/v2)"),
            "{errs:?}"
        );
    }

    #[test]
    fn kubernetes_kinds_a_bundle_carries_load() {
        let text = "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: r}\nrules: [{apiGroups: [''], resources: [pods], verbs: [get]}]\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: b, namespace: n}\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: r}\nsubjects: [{kind: ServiceAccount, name: s}]\n---\napiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {name: p}\nspec: {minAvailable: 1, selector: {matchLabels: {app: a}}}\n---\napiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: db}\nspec:\n  serviceName: db\n  replicas: 2\n  selector: {matchLabels: {app: db}}\n  template:\n    metadata: {labels: {app: db}}\n    spec: {containers: [{name: db, image: db}]}\n  volumeClaimTemplates: [{metadata: {name: data}}]\n---\napiVersion: batch/v1\nkind: CronJob\nmetadata: {name: c}\nspec:\n  schedule: '*/5 * * * *'\n  jobTemplate:\n    spec:\n      template:\n        spec: {restartPolicy: OnFailure, containers: [{name: c, image: c}]}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: p, image: p}]}\n";
        let m = load_str("t.yaml", text).unwrap();
        let kinds: Vec<&str> = m.iter().map(|d| d.resource.kind()).collect();
        assert_eq!(
            kinds,
            vec![
                "ClusterRole",
                "RoleBinding",
                "PodDisruptionBudget",
                "StatefulSet",
                "CronJob",
                "Pod"
            ]
        );
        assert_eq!(m.documents[0].resource.namespace(), "");
        // A typed kind still refuses a typo.
        let errs = errors(
            "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: db}\nspec:\n  servceName: db\n",
        );
        assert!(errs[0].contains("unknown field \"servceName\""), "{errs:?}");
    }

    #[test]
    fn unsupported_api_version_names_the_api_version_line() {
        let text = "kind: VirtualService\nmetadata: {name: web, namespace: blog-system}\napiVersion: networking.istio.io/v2\nspec: {}\n";
        assert_eq!(
            errors(text),
            vec![
                "t.yaml:3: VirtualService blog-system/web: apiVersion \"networking.istio.io/v2\" is not supported for kind VirtualService; use networking.istio.io/v1 or networking.istio.io/v1beta1 or networking.istio.io/v1alpha3"
            ]
        );
    }

    #[test]
    fn missing_kind_and_non_objects() {
        assert_eq!(
            errors("\n\napiVersion: v1\nmetadata: {name: x}\n"),
            vec!["t.yaml:3: missing `kind`: every object needs apiVersion and kind"]
        );
        assert_eq!(
            errors("---\n- a\n- b\n"),
            vec![
                "t.yaml:2: expected a Kubernetes object (a mapping with apiVersion and kind), found a list"
            ]
        );
        assert_eq!(
            errors("kind: [a]\napiVersion: v1\n"),
            vec!["t.yaml:1: `kind` must be a non-empty string"]
        );
    }

    #[test]
    fn snake_case_field_names_are_rejected_like_kubectl_does() {
        let text = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: v}\nspec:\n  http:\n  - retries: {attempts: 1, per_try_timeout: 2s}\n";
        let errs = errors(text);
        assert_eq!(errs.len(), 1);
        assert!(
            errs[0].starts_with("t.yaml:6: VirtualService default/v: spec.http[0].retries.per_try_timeout: unknown field \"per_try_timeout\", expected one of attempts, perTryTimeout,"),
            "{}",
            errs[0]
        );
    }

    #[test]
    fn wrong_type_string_where_int() {
        let text = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: was, namespace: blog-system}\nspec:\n  replicas: two\n";
        assert_eq!(
            errors(text),
            vec![
                "t.yaml:5: Deployment blog-system/was: spec.replicas: invalid type: string \"two\", expected an integer"
            ]
        );
    }

    #[test]
    fn bad_enum_value_lists_allowed_values() {
        let text = "apiVersion: networking.istio.io/v1beta1\nkind: DestinationRule\nmetadata: {name: web-dest-rule, namespace: blog-system}\nspec:\n  host: web-service\n  trafficPolicy:\n    tls:\n      mode: ISTIO_MUTUAl\n";
        assert_eq!(
            errors(text),
            vec![
                "t.yaml:8: DestinationRule blog-system/web-dest-rule: spec.trafficPolicy.tls.mode: unknown variant \"ISTIO_MUTUAl\", expected one of DISABLE, SIMPLE, MUTUAL, ISTIO_MUTUAL"
            ]
        );
    }

    #[test]
    fn malformed_duration_has_its_path() {
        let text = "apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: v}\nspec:\n  http:\n  - timeout: 10 seconds\n";
        assert_eq!(
            errors(text),
            vec![
                "t.yaml:10: VirtualService default/v: spec.http[0].timeout: invalid duration \"10 seconds\": unknown unit; write a number with a unit: ns, us, ms, s, m or h (e.g. \"10s\", \"2.5s\", \"100ms\", \"1h\")"
            ]
        );
        let text = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: d}\nspec:\n  trafficPolicy:\n    outlierDetection:\n      interval: 10\n";
        assert_eq!(
            errors(text),
            vec![
                "t.yaml:7: DestinationRule default/d: spec.trafficPolicy.outlierDetection.interval: invalid duration 10: a duration needs a unit, e.g. \"10s\""
            ]
        );
    }

    #[test]
    fn yaml_syntax_error_in_second_document() {
        let text = "apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: [web\nspec: {}\n";
        let errs = errors(text);
        assert_eq!(errs.len(), 1);
        assert!(
            errs[0].starts_with("t.yaml:9: YAML syntax error: did not find expected ',' or ']'"),
            "{}",
            errs[0]
        );
        assert!(errs[0].contains("line 8"), "{}", errs[0]);
    }

    #[test]
    fn a_syntax_error_at_the_end_of_a_text_without_a_final_newline_is_on_its_last_line() {
        // Found by fuzzing: the parser placed it on line 4 of a 3-line file.
        let text = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\n  b";
        let errs = errors(text);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(
            errs[0].starts_with("t.yaml:5: YAML syntax error: could not find expected ':'"),
            "{}",
            errs[0]
        );
        // With the final newline, the end is the empty line after it, as before.
        let errs = errors(&format!("{text}\n"));
        assert!(errs[0].starts_with("t.yaml:6: "), "{}", errs[0]);
    }

    #[test]
    fn duplicate_key_is_an_error() {
        let text = "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  labels:\n    app: web\n    app: was\n";
        let errs = errors(text);
        assert_eq!(
            errs,
            vec!["t.yaml:6: YAML syntax error: duplicate entry with key \"app\""]
        );
    }

    #[test]
    fn all_errors_are_collected() {
        let text = "apiVersion: v1\nkind: Nope\n---\napiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec:\n  ports:\n  - port: http\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: fine}\n";
        let (m, errs) = load_str_partial("t.yaml", text);
        assert_eq!(m.len(), 1);
        assert!(matches!(m.documents[0].resource, Resource::Namespace(_)));
        let lines: Vec<usize> = errs.iter().map(|e| e.at().map_or(0, |a| a.line)).collect();
        assert_eq!(lines, vec![2, 9]);
        assert_eq!(
            errs[1].to_string(),
            "t.yaml:9: Service default/s: spec.ports[0].port: invalid type: string \"http\", expected an integer"
        );
    }

    #[test]
    fn missing_required_field() {
        let text = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: w}\nspec:\n  template:\n    spec:\n      containers:\n      - image: nginx\n";
        let errs = errors(text);
        assert_eq!(errs.len(), 1);
        assert!(
            errs[0].ends_with(
                "Deployment default/w: spec.template.spec.containers[0]: missing field \"name\""
            ),
            "{}",
            errs[0]
        );
        assert!(errs[0].starts_with("t.yaml:8:"), "{}", errs[0]);
    }

    #[test]
    fn directory_loading_is_recursive_sorted_and_reports_io_errors() {
        let dir = std::env::temp_dir().join(format!("skein-api-load-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::create_dir_all(dir.join(".hidden")).unwrap();
        std::fs::write(
            dir.join("b.yml"),
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: b}\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("sub/a.yaml"),
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("a.yaml"),
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: first}\n",
        )
        .unwrap();
        std::fs::write(dir.join("notes.md"), "not yaml").unwrap();
        std::fs::write(dir.join(".hidden/x.yaml"), "kind: Broken").unwrap();
        let m = load_path(&dir).unwrap();
        let names: Vec<&str> = m.iter().map(|d| d.resource.name()).collect();
        assert_eq!(names, vec!["first", "b", "a"]);
        assert_eq!(m.documents[2].source.file, dir.join("sub/a.yaml"));

        let empty = dir.join("sub2");
        std::fs::create_dir_all(&empty).unwrap();
        let err = load_path(&empty).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("{}: no *.yaml or *.yml files found", empty.display())
        );
        let missing = dir.join("missing.yaml");
        let err = load_path(&missing).unwrap_err();
        assert!(
            err.to_string()
                .starts_with(&format!("{}: cannot read: ", missing.display()))
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
