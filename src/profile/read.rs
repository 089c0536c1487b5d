//! Reading a profile: from text to [`Profile`], refusing what could hurt before a parser sees
//! it (an enormous file, flow collections nested thousands deep), and saying what is wrong in
//! the user's words: the syntax error before any error it causes, the line of a second
//! document, that an empty file is empty, "a whole number" rather than `u32`.

use std::path::Path;

use super::{Problem, Profile, ProfileError, locate};

/// Largest profile read. Profiles are a few KiB; a bigger file is a mistake, and parsing
/// 50 MB of YAML takes over a GiB.
pub const MAX_PROFILE_BYTES: usize = 4 << 20;
/// Deepest nesting of `[` and `{` read. Nothing in the schema nests past a dozen levels;
/// the parser takes minutes on a 200 KB file of `[[[…`.
pub const MAX_DEPTH: usize = 200;

/// A profile as read: what it says, the text it came from (for positions, and for the
/// results, which keep the profile that ran) and the file's name (for messages).
#[derive(Clone, Debug)]
pub struct Document {
    pub file: String,
    pub text: String,
    pub profile: Profile,
}

impl Document {
    /// A problem at `path` in the document, with the line and column of the value there (or
    /// of its nearest existing parent).
    ///
    /// A path may end in `@N`: the problem is N characters into that value's text (a template
    /// variable inside a string), so the column points at it when the string is on one line.
    pub fn problem(&self, path: &str, message: impl Into<String>) -> Problem {
        let (path, within) = match path.rsplit_once('@') {
            Some((p, n)) if n.bytes().all(|b| b.is_ascii_digit()) && !n.is_empty() => {
                (p, n.parse::<usize>().ok())
            }
            _ => (path, None),
        };
        let mut at = locate(&self.text, path);
        if let (Some((line, col)), Some(n)) = (at, within) {
            at = Some((line, col + self.offset_in_value(line, col, n)));
        }
        Problem {
            file: self.file.clone(),
            line: at.map(|l| l.0),
            column: at.map(|l| l.1),
            path: path.to_string(),
            message: message.into(),
        }
    }

    /// Columns from the start of the value at `line:col` to its `n`th character: past an
    /// opening quote, and only when the value's text has that many characters on its line
    /// (escapes and folded strings are left at the value's start).
    fn offset_in_value(&self, line: usize, col: usize, n: usize) -> usize {
        let Some(text) = self.text.lines().nth(line.saturating_sub(1)) else {
            return 0;
        };
        let rest: Vec<char> = text.chars().skip(col.saturating_sub(1)).collect();
        let quoted = matches!(rest.first(), Some('"' | '\''));
        let body = &rest[usize::from(quoted)..];
        if body.len() > n && !body[..n].contains(&'\\') {
            n + usize::from(quoted)
        } else {
            0
        }
    }
}

/// Read a profile file.
pub fn load(path: &Path) -> Result<Document, ProfileError> {
    let file = path.display().to_string();
    let read = |source| ProfileError::Read {
        file: file.clone(),
        source,
    };
    let size = std::fs::metadata(path).map_err(read)?.len();
    if size > MAX_PROFILE_BYTES as u64 {
        return Err(too_big(&file, size));
    }
    let text = std::fs::read_to_string(path).map_err(read)?;
    parse(&text, &file)
}

/// Parse profile text; `file` is only used in messages.
pub fn parse(text: &str, file: &str) -> Result<Document, ProfileError> {
    let at = |line: Option<usize>, column: Option<usize>, message: String| {
        ProfileError::Invalid(vec![Problem {
            file: file.to_string(),
            line,
            column,
            path: String::new(),
            message,
        }])
    };
    if text.len() > MAX_PROFILE_BYTES {
        return Err(too_big(file, text.len() as u64));
    }
    if text
        .lines()
        .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
    {
        return Err(at(
            None,
            None,
            "the profile is empty: it needs at least `name`, `duration`, `target` and `groups`"
                .into(),
        ));
    }
    if let Some((line, column)) = too_deep(text) {
        return Err(at(
            Some(line),
            Some(column),
            format!("nested deeper than {MAX_DEPTH} levels of [ and {{"),
        ));
    }
    if let Some(line) = second_document(text) {
        return Err(at(
            Some(line),
            Some(1),
            "a second YAML document: a profile is one document (remove this `---` and what \
             follows, or put it in a file of its own)"
                .into(),
        ));
    }
    // The whole text as plain YAML first: a syntax error (or a duplicate key) is reported as
    // itself, not as the missing field it makes the schema see.
    let to_problem = |e: serde_yaml_ng::Error| {
        let loc = e.location().map(|l| (l.line(), l.column()));
        let message = strip_location(&e.to_string());
        // The parser places a duplicate key at its mapping; the user wants the duplicate.
        let loc = match (loc, message.rsplit_once("duplicate entry with key ")) {
            (Some(at), Some((_, key))) => duplicate_at(text, at, key.trim_matches('"')),
            _ => loc,
        };
        at(loc.map(|l| l.0), loc.map(|l| l.1), in_users_words(&message))
    };
    from_yaml::<serde_yaml_ng::Value>(text).map_err(to_problem)?;
    let profile: Profile = from_yaml(text).map_err(to_problem)?;
    Ok(Document {
        file: file.to_string(),
        text: text.to_string(),
        profile,
    })
}

/// The one place YAML is read (the parser crate is chosen here and nowhere else).
pub(crate) fn from_yaml<T: serde::de::DeserializeOwned>(
    text: &str,
) -> Result<T, serde_yaml_ng::Error> {
    serde_yaml_ng::from_str(text)
}

fn too_big(file: &str, bytes: u64) -> ProfileError {
    ProfileError::Invalid(vec![Problem {
        file: file.to_string(),
        line: None,
        column: None,
        path: String::new(),
        message: format!(
            "the profile is {:.1} MiB; a profile may be at most {} MiB",
            bytes as f64 / (1 << 20) as f64,
            MAX_PROFILE_BYTES >> 20
        ),
    }])
}

/// Where flow collections (`[`, `{`) first nest deeper than [`MAX_DEPTH`], outside quotes
/// and comments: (line, column), 1-based.
fn too_deep(text: &str) -> Option<(usize, usize)> {
    let mut depth = 0usize;
    let (mut line, mut column) = (1usize, 0usize);
    let mut quote: Option<char> = None;
    let mut comment = false;
    let mut previous = '\n';
    for c in text.chars() {
        column += 1;
        if c == '\n' {
            line += 1;
            column = 0;
            comment = false;
            previous = c;
            continue;
        }
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if comment => {}
            None => match c {
                '"' | '\'' => quote = Some(c),
                '#' if previous.is_whitespace() => comment = true,
                '[' | '{' => {
                    depth += 1;
                    if depth > MAX_DEPTH {
                        return Some((line, column));
                    }
                }
                ']' | '}' => depth = depth.saturating_sub(1),
                _ => {}
            },
        }
        previous = c;
    }
    None
}

/// Where `key` appears the second time in the block mapping that starts at `mapping` (line,
/// column): at the same column, before the mapping ends. A flow mapping is on one line, which
/// is then the answer.
fn duplicate_at(text: &str, mapping: (usize, usize), key: &str) -> Option<(usize, usize)> {
    let (line, column) = mapping;
    let mut seen = 0;
    for (i, l) in text.lines().enumerate().skip(line - 1) {
        let indent = l.len() - l.trim_start().len();
        if i + 1 > line && !l.trim().is_empty() && indent + 1 < column {
            break;
        }
        let rest = l.get(column - 1..).unwrap_or("");
        let unquoted = rest.trim_start_matches(['"', '\'']);
        if indent + 1 == column
            && unquoted.starts_with(key)
            && unquoted[key.len()..]
                .trim_start_matches(['"', '\''])
                .starts_with(':')
        {
            seen += 1;
            if seen == 2 {
                return Some((i + 1, column));
            }
        }
    }
    Some(mapping)
}

/// The line of a second document's `---`, if the text has more than one document.
fn second_document(text: &str) -> Option<usize> {
    let mut content = false;
    for (i, l) in text.lines().enumerate() {
        let marker = l == "---" || l.starts_with("--- ") || l.starts_with("---\t");
        if marker && content {
            return Some(i + 1);
        }
        if !marker && !l.trim().is_empty() && !l.trim_start().starts_with('#') {
            content = true;
        }
    }
    None
}

/// The YAML parser appends " at line L column C" to its messages; we print the position first,
/// compiler style, so drop the suffix.
fn strip_location(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) if msg[i..].contains(" column ") => msg[..i].to_string(),
        _ => msg.to_string(),
    }
}

/// serde names Rust types in its messages; a user wrote YAML.
fn in_users_words(msg: &str) -> String {
    const WORDS: [(&str, &str); 14] = [
        ("expected u8", "expected a whole number from 0 to 255"),
        ("expected u16", "expected a whole number from 0 to 65535"),
        (
            "expected u32",
            "expected a whole number from 0 to 4294967295",
        ),
        ("expected u64", "expected a whole number of 0 or more"),
        ("expected usize", "expected a whole number of 0 or more"),
        ("expected i64", "expected a whole number"),
        ("expected f64", "expected a number"),
        ("expected a boolean", "expected true or false"),
        ("expected a string", "expected text"),
        (
            "expected a sequence",
            "expected a list (`- item` lines or `[a, b]`)",
        ),
        (
            "expected a map",
            "expected keys and values (`key: value` lines or `{ key: value }`)",
        ),
        ("invalid type: sequence", "invalid type: a list"),
        ("invalid type: map", "invalid type: keys and values"),
        ("duplicate entry with key", "this key is given twice:"),
    ];
    let mut out = msg.to_string();
    for (rust, user) in WORDS {
        out = out.replace(rust, user);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(text: &str) -> Problem {
        match parse(text, "p.yaml") {
            Err(ProfileError::Invalid(p)) => p.into_iter().next().unwrap(),
            other => panic!("expected a problem, got {other:?}"),
        }
    }

    const MIN: &str = "name: x\nduration: 10s\ntarget: embedded\ngroups:\n  - name: g\n    clients: 10\n    arrival: { rate: 10/s }\n";

    #[test]
    fn empty_files_say_so() {
        for text in ["", "\n\n", "# only a comment\n"] {
            assert!(problem(text).message.contains("the profile is empty"));
        }
    }

    #[test]
    fn a_syntax_error_wins_over_what_it_causes() {
        // `arrival` one space short: the schema alone would say `missing field arrival`.
        let p = problem(&MIN.replace("    arrival", "   arrival"));
        assert_eq!(p.line, Some(7), "{p}");
        assert!(!p.message.contains("missing field"), "{p}");
    }

    #[test]
    fn a_second_document_gets_its_line() {
        let p = problem(&format!("{MIN}---\nname: y\n"));
        assert_eq!(p.line, Some(8));
        assert!(p.message.contains("second YAML document"), "{p}");
        // A leading `---` is the first document's start, not a second one.
        assert!(parse(&format!("---\n{MIN}"), "p.yaml").is_ok());
    }

    #[test]
    fn duplicate_keys_are_refused_at_the_duplicate() {
        let p = problem(&format!("{MIN}    headers: {{ A: b, A: c }}\n"));
        assert_eq!(p.line, Some(8), "{p}");
        assert!(p.message.contains("twice"), "{p}");
        let p = problem(&format!(
            "{MIN}    behaviour:\n      reconnect:\n        on_close:\n          1000: stop\n          1000: retry\n"
        ));
        assert_eq!(p.line, Some(12), "{p}");
    }

    #[test]
    fn deep_nesting_and_huge_files_are_refused_before_parsing() {
        let deep = format!("name: {}\n", "[".repeat(100_000));
        let t = std::time::Instant::now();
        let p = problem(&deep);
        assert!(p.message.contains("nested deeper than 200"), "{p}");
        assert_eq!((p.line, p.column), (Some(1), Some(7 + MAX_DEPTH)));
        assert!(t.elapsed() < std::time::Duration::from_secs(5));
        // Brackets in quotes and comments do not count.
        assert!(too_deep(&format!("a: '{}' # {}\n", "[".repeat(500), "{".repeat(500))).is_none());
        let big = format!("{MIN}# {}\n", "x".repeat(MAX_PROFILE_BYTES));
        assert!(problem(&big).message.contains("at most 4 MiB"));
    }

    #[test]
    fn units_read_from_yaml_numbers_and_strings() {
        use crate::units::{ByteSize, Dur, Percent};
        let b: ByteSize = from_yaml("128").unwrap();
        assert_eq!(b.0, 128);
        let p: Percent = from_yaml("0.5").unwrap();
        assert_eq!(p.0, 0.5);
        let e = from_yaml::<Dur>("10").unwrap_err().to_string();
        assert!(e.contains("invalid duration `10`"), "{e}");
    }

    #[test]
    fn messages_speak_yaml_not_rust() {
        let p = problem(&MIN.replace("clients: 10", "clients: -3"));
        assert!(
            p.message.contains("a whole number from 0 to 4294967295"),
            "{p}"
        );
        assert!(!p.message.contains("u32"), "{p}");
    }
}
