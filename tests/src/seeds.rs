//! Reading the JSON examples out of the seeds, which are plain text copied from web pages:
//! an example starts on a line of its own with `{` and may end glued to the next heading
//! (`}Get Agent`).

use serde_json::Value;

/// One JSON example of a seed, with what precedes it.
#[derive(Debug)]
pub struct SeedExample {
    /// The seed's file name and the example's first line, such as `seed-003-agents.txt:58`.
    pub source: String,
    /// The example's text as written.
    pub text: String,
    /// The parsed example.
    pub value: Value,
    /// The last `METHOD /v1/path` line before the example, with `:id` as `{id}`.
    pub endpoint: Option<(String, String)>,
    /// The last line before the example that reads as a heading (capitalised words).
    pub heading: String,
}

/// Every JSON example of a seed, in order.
pub fn json_examples(name: &str, text: &str) -> Vec<SeedExample> {
    let endpoint_line =
        regex::Regex::new(r"^(GET|POST|PUT|PATCH|DELETE) (/v1/[^\s`]*?)(?:Returns|Retrieves|$)")
            .unwrap();
    let heading_line = regex::Regex::new(r"^[A-Z][a-z]+(?: [A-Z][a-z]+)*$").unwrap();
    let path_parameter = regex::Regex::new(r":(\w+)").unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let (mut endpoint, mut heading) = (None, String::new());
    let mut index = 0;
    while index < lines.len() {
        let line = lines[index];
        if let Some(c) = endpoint_line.captures(line) {
            let path = path_parameter.replace_all(&c[2], "{$1}").into_owned();
            endpoint = Some((c[1].to_lowercase(), path));
        } else if heading_line.is_match(line) && line != "Response" && line != "Request" {
            heading = line.to_string();
        }
        if line.trim() != "{" {
            index += 1;
            continue;
        }
        let rest = lines[index..].join("\n");
        let length = balanced_length(&rest).unwrap_or(rest.len());
        let example = &rest[..length];
        let value = serde_json::from_str(example)
            .unwrap_or_else(|e| panic!("{name}:{}: not JSON: {e}", index + 1));
        out.push(SeedExample {
            source: format!("{name}:{}", index + 1),
            text: example.to_string(),
            value,
            endpoint: endpoint.take(),
            heading: std::mem::take(&mut heading),
        });
        index += example.lines().count();
    }
    out
}

/// The length of the JSON object that `text` opens with, counting braces outside strings.
fn balanced_length(text: &str) -> Option<usize> {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for (i, c) in text.char_indices() {
        match (in_string, escaped, c) {
            (true, true, _) => escaped = false,
            (true, false, '\\') => escaped = true,
            (true, false, '"') => in_string = false,
            (true, false, _) => {}
            (false, _, '"') => in_string = true,
            (false, _, '{') => depth += 1,
            (false, _, '}') => {
                depth -= 1;
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            _ => {}
        }
    }
    None
}

/// The text with all white space removed, to compare examples re-indented in Markdown.
pub fn squash(text: &str) -> String {
    text.chars().filter(|c| !c.is_whitespace()).collect()
}
