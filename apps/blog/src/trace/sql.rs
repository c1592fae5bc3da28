//! `db.statement` without literals: what a SQL span may record without leaking data.

/// `sql` with every literal replaced by `?`: quoted strings (`'..'` with `''` or backslash
/// escapes, `".."`, and prefixed forms such as `X'..'` or `N'..'`), numbers (integers,
/// decimals, exponents, `0x..` hex); comments (`-- ..`, `# ..`, `/* .. */`) are dropped, since
/// they can hold anything; runs of whitespace become one space; and an `IN` list of only
/// placeholders collapses to `IN (?)`, so statements differing only in list length read alike.
/// Identifiers, including `` `quoted` `` ones, keywords and existing placeholders are kept.
pub fn strip_literals(sql: &str) -> String {
    let b = sql.as_bytes();
    let mut out = String::with_capacity(sql.len());
    let mut i = 0;
    let mut pending_space = false;
    // Pushes a token, with one space before it if whitespace or a comment came before.
    let push = |out: &mut String, s: &str, pending: &mut bool| {
        if *pending && !out.is_empty() {
            out.push(' ');
        }
        *pending = false;
        out.push_str(s);
    };
    while i < b.len() {
        let c = b[i];
        match c {
            b' ' | b'\t' | b'\n' | b'\r' => {
                pending_space = true;
                i += 1;
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                i = skip_line(b, i);
                pending_space = true;
            }
            b'#' => {
                i = skip_line(b, i);
                pending_space = true;
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i = match sql[i + 2..].find("*/") {
                    Some(end) => i + 2 + end + 2,
                    None => b.len(),
                };
                pending_space = true;
            }
            b'\'' | b'"' => {
                i = skip_quoted(b, i, c);
                push(&mut out, "?", &mut pending_space);
            }
            b'`' => {
                let end = skip_quoted(b, i, b'`');
                push(&mut out, &sql[i..end], &mut pending_space);
                i = end;
            }
            b'0'..=b'9' => {
                i = skip_number(b, i);
                push(&mut out, "?", &mut pending_space);
            }
            b'.' if b.get(i + 1).is_some_and(u8::is_ascii_digit) => {
                i = skip_number(b, i);
                push(&mut out, "?", &mut pending_space);
            }
            c if is_ident(c) => {
                let start = i;
                while i < b.len() && is_ident(b[i]) {
                    i += 1;
                }
                let word = &sql[start..i];
                // X'0A', B'01', N'text', E'..': a prefixed string literal.
                if i - start == 1 && matches!(b.get(i), Some(b'\'')) && is_prefix(b[start]) {
                    i = skip_quoted(b, i, b'\'');
                    push(&mut out, "?", &mut pending_space);
                } else {
                    push(&mut out, word, &mut pending_space);
                }
            }
            _ => {
                // One character (operators, punctuation, multi-byte UTF-8 kept whole).
                let len = sql[i..].chars().next().map_or(1, char::len_utf8);
                push(&mut out, &sql[i..i + len], &mut pending_space);
                i += len;
            }
        }
    }
    collapse_in_lists(&out)
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80
}

fn is_prefix(c: u8) -> bool {
    matches!(c, b'x' | b'X' | b'b' | b'B' | b'n' | b'N' | b'e' | b'E')
}

fn skip_line(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && b[i] != b'\n' {
        i += 1;
    }
    i
}

/// The index just past the quoted run starting at `i` (a doubled quote or a backslash escapes;
/// an unterminated one runs to the end).
fn skip_quoted(b: &[u8], mut i: usize, quote: u8) -> usize {
    i += 1;
    while i < b.len() {
        match b[i] {
            b'\\' if quote != b'`' => i += 2,
            c if c == quote => {
                if b.get(i + 1) == Some(&quote) {
                    i += 2;
                } else {
                    return i + 1;
                }
            }
            _ => i += 1,
        }
    }
    b.len()
}

fn skip_number(b: &[u8], mut i: usize) -> usize {
    if b[i] == b'0' && matches!(b.get(i + 1), Some(b'x' | b'X')) {
        i += 2;
        while i < b.len() && b[i].is_ascii_hexdigit() {
            i += 1;
        }
        return i;
    }
    while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'.') {
        i += 1;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        let mut j = i + 1;
        if matches!(b.get(j), Some(b'+' | b'-')) {
            j += 1;
        }
        if b.get(j).is_some_and(u8::is_ascii_digit) {
            i = j;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
        }
    }
    // `1abc` is an identifier in MySQL; swallow the rest so no digits stay behind.
    while i < b.len() && is_ident(b[i]) {
        i += 1;
    }
    i
}

/// `IN (?, ?, ?)` -> `IN (?)` (case-insensitive `IN`; only lists of bare placeholders).
fn collapse_in_lists(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    loop {
        let Some(pos) = find_in_keyword(rest) else {
            out.push_str(rest);
            return out;
        };
        let (head, tail) = rest.split_at(pos + 2);
        out.push_str(head);
        let after = tail.trim_start();
        if let Some(list) = after.strip_prefix('(')
            && let Some(close) = list.find(')')
            && list[..close].split(',').all(|item| item.trim() == "?")
        {
            out.push_str(" (?)");
            rest = &list[close + 1..];
        } else {
            rest = tail;
        }
    }
}

/// The byte offset of the next `IN` keyword (a whole word) in `s`.
fn find_in_keyword(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    (0..b.len().saturating_sub(1)).find(|&i| {
        b[i].eq_ignore_ascii_case(&b'i')
            && b[i + 1].eq_ignore_ascii_case(&b'n')
            && (i == 0 || !is_ident(b[i - 1]))
            && b.get(i + 2).is_none_or(|c| !is_ident(*c))
    })
}

/// `SELECT`, `INSERT`, ...: the statement's first keyword, upper-cased (`db.operation`).
pub fn operation(sql: &str) -> String {
    let stripped = strip_literals(sql);
    stripped
        .split(|c: char| !c.is_ascii_alphabetic())
        .find(|w| !w.is_empty())
        .unwrap_or("")
        .to_ascii_uppercase()
}

/// The table a statement works on: the first name after `FROM`, `INTO` or `UPDATE`
/// (`db.sql.table`), if there is one.
pub fn table(sql: &str) -> Option<String> {
    let stripped = strip_literals(sql);
    let mut words = stripped.split_whitespace();
    while let Some(w) = words.next() {
        if ["FROM", "INTO", "UPDATE"]
            .iter()
            .any(|k| w.eq_ignore_ascii_case(k))
        {
            let next = words.next()?;
            if next.starts_with('(') {
                return None;
            }
            let name = next
                .split(['(', ',', ';'])
                .next()
                .unwrap_or_default()
                .replace('`', "");
            return (!name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_alphanumeric() || c == '_' || c == '.'))
            .then_some(name);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_with_quotes_and_escapes() {
        assert_eq!(
            strip_literals("SELECT * FROM posts WHERE title = 'it''s' AND author = 'a\\'b'"),
            "SELECT * FROM posts WHERE title = ? AND author = ?"
        );
        assert_eq!(
            strip_literals(r#"UPDATE t SET a = "say \"hi\"", b = 'x' WHERE c = 'y'"#),
            "UPDATE t SET a = ?, b = ? WHERE c = ?"
        );
        assert_eq!(
            strip_literals("SELECT X'0aff', N'héllo', 'ünïcode'"),
            "SELECT ?, ?, ?"
        );
        assert_eq!(
            strip_literals("SELECT 'unterminated"),
            "SELECT ?",
            "an unterminated string hides the rest"
        );
        assert_eq!(
            strip_literals("SELECT `order`, `we'ird` FROM `posts`"),
            "SELECT `order`, `we'ird` FROM `posts`",
            "backquoted identifiers are kept"
        );
    }

    #[test]
    fn numbers() {
        assert_eq!(
            strip_literals("SELECT * FROM posts WHERE id = 42 LIMIT 20 OFFSET 0"),
            "SELECT * FROM posts WHERE id = ? LIMIT ? OFFSET ?"
        );
        assert_eq!(
            strip_literals("SELECT 3.14, .5, 1e10, 2.5E-3, 0xFF, -7"),
            "SELECT ?, ?, ?, ?, ?, -?"
        );
        assert_eq!(
            strip_literals("SELECT col1, t2.c3 FROM t2 WHERE a1 > 1"),
            "SELECT col1, t2.c3 FROM t2 WHERE a1 > ?",
            "digits inside identifiers stay"
        );
        assert_eq!(strip_literals("SELECT 1"), "SELECT ?");
    }

    #[test]
    fn in_lists_collapse() {
        assert_eq!(
            strip_literals("DELETE FROM posts WHERE id IN (1, 2, 3)"),
            "DELETE FROM posts WHERE id IN (?)"
        );
        assert_eq!(
            strip_literals("SELECT * FROM t WHERE a in ('x','y') AND b IN (?, ?) AND c = 1"),
            "SELECT * FROM t WHERE a in (?) AND b IN (?) AND c = ?"
        );
        assert_eq!(
            strip_literals("SELECT * FROM t WHERE a IN (SELECT id FROM u WHERE v = 2)"),
            "SELECT * FROM t WHERE a IN (SELECT id FROM u WHERE v = ?)",
            "a subquery is not a list"
        );
        assert_eq!(
            strip_literals("SELECT index_name, pin FROM t"),
            "SELECT index_name, pin FROM t"
        );
    }

    #[test]
    fn comments_are_dropped() {
        assert_eq!(
            strip_literals(
                "SELECT a -- the secret 'x'\nFROM t /* id = 5 */ WHERE b = 1 # trailing 'y'"
            ),
            "SELECT a FROM t WHERE b = ?"
        );
        assert_eq!(strip_literals("SELECT 1 /* unterminated"), "SELECT ?");
    }

    #[test]
    fn placeholders_and_the_blogs_own_statements_stay_readable() {
        let q =
            "SELECT id, title FROM posts \n     ORDER BY created_at DESC, id DESC LIMIT ? OFFSET ?";
        assert_eq!(
            strip_literals(q),
            "SELECT id, title FROM posts ORDER BY created_at DESC, id DESC LIMIT ? OFFSET ?"
        );
        assert_eq!(
            strip_literals("INSERT INTO posts (a, b) VALUES (?, ?)"),
            "INSERT INTO posts (a, b) VALUES (?, ?)"
        );
        assert_eq!(operation("  select count(*) from posts"), "SELECT");
        assert_eq!(operation("/* hint */ DELETE FROM posts"), "DELETE");
        assert_eq!(operation(""), "");
        assert_eq!(
            table("SELECT COUNT(*) FROM posts").as_deref(),
            Some("posts")
        );
        assert_eq!(
            table("insert into `posts` (a) values (?)").as_deref(),
            Some("posts")
        );
        assert_eq!(table("UPDATE posts SET a = ?").as_deref(), Some("posts"));
        assert_eq!(table("SELECT 1"), None);
        assert_eq!(table("SELECT * FROM (SELECT 1) x"), None);
    }
}
