//! A unified diff (`diff -u` with three lines of context) of two texts, line by line.

/// Beyond this many line pairs the longest-common-subsequence table is not built and the
/// texts are shown as one replaced block (bounded memory on hostile input).
const MAX_CELLS: usize = 4_000_000;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Edit {
    Keep(usize, usize),
    Del(usize),
    Add(usize),
}

fn edits(a: &[&str], b: &[&str]) -> Vec<Edit> {
    let (n, m) = (a.len(), b.len());
    if n.saturating_mul(m) > MAX_CELLS {
        let mut out: Vec<Edit> = (0..n).map(Edit::Del).collect();
        out.extend((0..m).map(Edit::Add));
        return out;
    }
    // lcs[i][j]: the longest common subsequence of a[i..] and b[j..].
    let mut lcs = vec![0u32; (n + 1) * (m + 1)];
    let at = |i: usize, j: usize| i * (m + 1) + j;
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[at(i, j)] = if a[i] == b[j] {
                lcs[at(i + 1, j + 1)] + 1
            } else {
                lcs[at(i + 1, j)].max(lcs[at(i, j + 1)])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::new();
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            out.push(Edit::Keep(i, j));
            i += 1;
            j += 1;
        } else if j < m && (i == n || lcs[at(i, j + 1)] >= lcs[at(i + 1, j)]) {
            out.push(Edit::Add(j));
            j += 1;
        } else {
            out.push(Edit::Del(i));
            i += 1;
        }
    }
    // Deletions before additions within a change, as diff prints them.
    let mut k = 0;
    while k < out.len() {
        let start = k;
        while k < out.len() && !matches!(out[k], Edit::Keep(..)) {
            k += 1;
        }
        out[start..k].sort_by_key(|e| matches!(e, Edit::Add(_)));
        k += 1;
    }
    out
}

fn range(start: usize, len: usize) -> String {
    match len {
        0 => format!("{start},0"),
        1 => format!("{}", start + 1),
        _ => format!("{},{len}", start + 1),
    }
}

/// The hunks of `a` -> `b` with `---`/`+++` headers; empty when the texts are equal.
pub fn unified(a: &str, b: &str, from: &str, to: &str) -> String {
    if a == b {
        return String::new();
    }
    let la: Vec<&str> = a.lines().collect();
    let lb: Vec<&str> = b.lines().collect();
    let e = edits(&la, &lb);
    let changed: Vec<usize> = (0..e.len())
        .filter(|&k| !matches!(e[k], Edit::Keep(..)))
        .collect();
    if changed.is_empty() {
        return String::new();
    }
    let mut out = format!("--- {from}\n+++ {to}\n");
    let ctx = 3;
    let mut k = 0;
    while k < changed.len() {
        let first = changed[k];
        let mut last = first;
        while k + 1 < changed.len() && changed[k + 1] <= last + 2 * ctx + 1 {
            k += 1;
            last = changed[k];
        }
        k += 1;
        let lo = first.saturating_sub(ctx);
        let hi = (last + ctx + 1).min(e.len());
        // Where the hunk starts in each text: lines before it in each.
        let (mut a0, mut b0) = (0, 0);
        for x in &e[..lo] {
            match x {
                Edit::Keep(..) => {
                    a0 += 1;
                    b0 += 1;
                }
                Edit::Del(_) => a0 += 1,
                Edit::Add(_) => b0 += 1,
            }
        }
        let (mut na, mut nb) = (0, 0);
        let mut body = String::new();
        for x in &e[lo..hi] {
            match *x {
                Edit::Keep(i, _) => {
                    na += 1;
                    nb += 1;
                    body.push_str(&format!(" {}\n", la[i]));
                }
                Edit::Del(i) => {
                    na += 1;
                    body.push_str(&format!("-{}\n", la[i]));
                }
                Edit::Add(j) => {
                    nb += 1;
                    body.push_str(&format!("+{}\n", lb[j]));
                }
            }
        }
        out.push_str(&format!("@@ -{} +{} @@\n", range(a0, na), range(b0, nb)));
        out.push_str(&body);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hunks_as_diff_u_prints_them() {
        let a = "a\nb\nc\nd\ne\nf\ng\nh\n";
        let b = "a\nb\nc\nD\ne\nf\ng\nh\n";
        assert_eq!(
            unified(a, b, "live/x", "merged/x"),
            "--- live/x\n+++ merged/x\n@@ -1,7 +1,7 @@\n a\n b\n c\n-d\n+D\n e\n f\n g\n"
        );
        assert_eq!(unified(a, a, "l", "m"), "");
    }

    #[test]
    fn new_and_removed_files_diff_against_nothing() {
        assert_eq!(
            unified("", "x: 1\n", "live/x", "merged/x"),
            "--- live/x\n+++ merged/x\n@@ -0,0 +1 @@\n+x: 1\n"
        );
        assert_eq!(
            unified("x: 1\ny: 2\n", "", "live/x", "merged/x"),
            "--- live/x\n+++ merged/x\n@@ -1,2 +0,0 @@\n-x: 1\n-y: 2\n"
        );
    }

    #[test]
    fn distant_changes_make_two_hunks() {
        let a: String = (0..20).map(|i| format!("{i}\n")).collect();
        let b: String = (0..20)
            .map(|i| match i {
                2 => "two\n".to_string(),
                17 => "seventeen\n".to_string(),
                _ => format!("{i}\n"),
            })
            .collect();
        let d = unified(&a, &b, "l", "m");
        assert_eq!(d.matches("@@ -").count(), 2, "{d}");
        assert!(d.contains("@@ -1,6 +1,6 @@"), "{d}");
        assert!(d.contains("@@ -15,6 +15,6 @@"), "{d}");
    }
}
