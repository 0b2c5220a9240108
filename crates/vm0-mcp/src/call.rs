//! Calls one operation of the table with a tool's arguments: each goes where the spec puts
//! it (path, query, header or body), and the API's answer, or its error, comes back.

use serde_json::{Map, Value};
use vm0_client::Client;

use crate::table::{Location, Operation};

/// Why a call did not get the API's answer.
#[derive(Debug)]
pub(crate) enum CallError {
    /// The arguments were refused before any request: the argument, and why.
    Argument { name: String, problem: String },
    /// The API answered with an error, or did not answer.
    Client(vm0_client::Error),
}

impl From<vm0_client::Error> for CallError {
    fn from(error: vm0_client::Error) -> Self {
        CallError::Client(error)
    }
}

/// Calls `operation` with `arguments`; the JSON it answers (`None` for no body).
pub(crate) async fn call(
    client: &Client,
    operation: &Operation,
    arguments: Map<String, Value>,
) -> Result<Option<Value>, CallError> {
    check_names(operation, &arguments)?;
    let (mut path, mut query, mut headers) = (operation.path.clone(), Vec::new(), Vec::new());
    let mut body = operation.arguments.iter().any(|a| a.location == Location::Body).then(Map::new);
    for (name, value) in arguments {
        let location = operation
            .arguments
            .iter()
            .find(|a| a.name == name)
            .map(|a| a.location)
            .expect("check_names let only the operation's arguments through");
        match (location, body.as_mut()) {
            (Location::Body, Some(body)) => {
                body.insert(name, value);
            }
            (Location::Path, _) => {
                let segment = path_segment(&name, &scalar(&name, &value)?)?;
                path = path.replace(&format!("{{{name}}}"), &segment);
            }
            (Location::Query, _) => query.push((name.clone(), scalar(&name, &value)?)),
            (Location::Header, _) | (Location::Body, None) => {
                headers.push((name.clone(), scalar(&name, &value)?))
            }
        }
    }
    let method = operation.method.parse().expect("the table's methods are HTTP methods");
    let body = body.map(Value::Object);
    Ok(client.call_json(method, &path, &query, &headers, body.as_ref()).await?)
}

/// Refuses an argument the operation does not take, and a required one left out, naming
/// it: what the tool's input schema says, before the API is asked.
fn check_names(operation: &Operation, arguments: &Map<String, Value>) -> Result<(), CallError> {
    let known = || operation.arguments.iter().map(|a| a.name.as_str());
    if let Some(name) = arguments.keys().find(|name| !known().any(|k| k == *name)) {
        let takes = known().collect::<Vec<_>>().join(", ");
        let problem = format!("{} takes no argument {name}; it takes: {takes}", operation.name);
        return Err(CallError::Argument { name: name.clone(), problem });
    }
    let required = operation.input_schema.get("required").and_then(Value::as_array);
    for name in required.into_iter().flatten().filter_map(Value::as_str) {
        if !arguments.contains_key(name) {
            let problem = format!("{} needs the argument {name}", operation.name);
            return Err(CallError::Argument { name: name.to_string(), problem });
        }
    }
    Ok(())
}

/// A path, query or header argument as the text it is sent as; an object, an array or
/// null has none.
fn scalar(name: &str, value: &Value) -> Result<String, CallError> {
    match value {
        Value::String(text) => Ok(text.clone()),
        Value::Number(number) => Ok(number.to_string()),
        Value::Bool(flag) => Ok(flag.to_string()),
        other => Err(CallError::Argument {
            name: name.to_string(),
            problem: format!("{name} must be a string, a number or a boolean, not {other}"),
        }),
    }
}

/// The path argument `name`'s `text` as one path segment, which cannot reach another path:
/// every byte but the unreserved ones percent-encoded (`../tokens`), and no empty, `.` or
/// `..` segment (which a URL parser would fold into its neighbours, escaped or not).
fn path_segment(name: &str, text: &str) -> Result<String, CallError> {
    if matches!(text, "" | "." | "..") {
        let problem = format!("{name} must be an id, not {text:?}");
        return Err(CallError::Argument { name: name.to_string(), problem });
    }
    Ok(escape_segment(text))
}

fn escape_segment(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::path_segment;

    #[test]
    fn a_path_argument_stays_one_segment() {
        let segment = |text| path_segment("id", text).ok();
        assert_eq!(segment("agt_1").as_deref(), Some("agt_1"));
        assert_eq!(segment("../tokens").as_deref(), Some("..%2Ftokens"));
        assert_eq!(segment("a b?c#d").as_deref(), Some("a%20b%3Fc%23d"));
        assert_eq!([segment(""), segment("."), segment("..")], [None, None, None]);
    }
}
