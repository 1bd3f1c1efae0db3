//! Route header templates (`X-Account: acct-{xref_account_id}`): `HeaderTemplate::parse` on
//! arbitrary text, `render` with arbitrary token-response values, and the same template loaded
//! through `Config::from_yaml`.
//!
//! Checked against a small independent model of the documented syntax (`{name}` with
//! `[A-Za-z0-9_]+`, `{{` and `}}` for braces, no control characters): parse accepts exactly
//! what the model does, render produces exactly the model's text or refuses it, a rendered value
//! never holds CR, LF or NUL, and a template refused by `parse` never loads (so it can never be
//! rendered on the request path).
#![no_main]

use std::path::Path;

use authrelay::Config;
use authrelay::config::HeaderTemplate;
use http::HeaderValue;
use http::header::HeaderName;
use libfuzzer_sys::fuzz_target;

/// The input as text, one item a line: the header name, the template, `static` (the provider
/// is `grant: static`, which offers `{token}` only) or anything else (client credentials), then
/// token-response fields as `name=value` (`token` is the access token). `\r`, `\n`, `\t`, `\0`
/// and `\\` are escapes, so any value can be written on one line.
#[derive(Debug)]
struct Input {
    header_name: String,
    template: String,
    static_grant: bool,
    values: Vec<(String, String)>,
}

impl Input {
    fn read(text: &str) -> Input {
        let mut lines = text.split('\n').map(unescape);
        let header_name = lines.next().unwrap_or_default();
        let template = lines.next().unwrap_or_default();
        let static_grant = lines.next().is_some_and(|line| line == "static");
        let values = lines
            .map(|line| match line.split_once('=') {
                Some((name, value)) => (name.to_string(), value.to_string()),
                None => (line, String::new()),
            })
            .collect();
        Input {
            header_name,
            template,
            static_grant,
            values,
        }
    }
}

fn unescape(line: &str) -> String {
    let mut out = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('r') => out.push('\r'),
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('0') => out.push('\0'),
            Some('\\') => out.push('\\'),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

#[derive(Debug, PartialEq)]
enum Part {
    Literal(String),
    Field(String),
}

/// The documented syntax, written out independently of `HeaderTemplate::parse`.
fn model_parse(text: &str) -> Option<Vec<Part>> {
    let chars: Vec<char> = text.chars().collect();
    let mut parts = Vec::new();
    let mut literal = String::new();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '{' if chars.get(i + 1) == Some(&'{') => {
                literal.push('{');
                i += 2;
            }
            '}' if chars.get(i + 1) == Some(&'}') => {
                literal.push('}');
                i += 2;
            }
            '{' => {
                let close = chars[i + 1..].iter().position(|&c| c == '}')? + i + 1;
                let name: String = chars[i + 1..close].iter().collect();
                if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    return None;
                }
                if !literal.is_empty() {
                    parts.push(Part::Literal(std::mem::take(&mut literal)));
                }
                parts.push(Part::Field(name));
                i = close + 1;
            }
            '}' => return None,
            c if c.is_control() => return None,
            c => {
                literal.push(c);
                i += 1;
            }
        }
    }
    if !literal.is_empty() {
        parts.push(Part::Literal(literal));
    }
    // A template without fields is checked as a header value when it loads.
    if let [Part::Literal(text)] = parts.as_slice() {
        HeaderValue::from_str(text).ok()?;
    }
    Some(parts)
}

/// A YAML double-quoted scalar holding exactly `text`: everything but printable ASCII escaped.
fn yaml_quoted(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            ' '..='~' => out.push(c),
            c if (c as u32) <= 0xFFFF => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push_str(&format!("\\U{:08X}", c as u32)),
        }
    }
    out.push('"');
    out
}

const REFUSED_HEADERS: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
    "authorization",
    "proxy-authorization",
];

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let input = Input::read(text);
    let lookup = |name: &str| {
        input
            .values
            .iter()
            .find(|(field, _)| field == name)
            .map(|(_, value)| value.as_str())
    };

    let model = model_parse(&input.template);
    let parsed = HeaderTemplate::parse(&input.template);
    assert_eq!(
        parsed.is_ok(),
        model.is_some(),
        "parse and the model disagree on {:?}: {:?}",
        input.template,
        parsed.as_ref().err()
    );
    if let (Ok(template), Some(parts)) = (&parsed, &model) {
        assert!(!input.template.contains(|c: char| c.is_control()));
        let model_fields: Vec<&str> = parts
            .iter()
            .filter_map(|part| match part {
                Part::Field(name) => Some(name.as_str()),
                Part::Literal(_) => None,
            })
            .collect();
        assert_eq!(template.fields().collect::<Vec<_>>(), model_fields);
        assert_eq!(template.fixed().is_some(), model_fields.is_empty());

        let expected: String = parts
            .iter()
            .map(|part| match part {
                Part::Literal(text) => text,
                Part::Field(name) => lookup(name).unwrap_or_default(),
            })
            .collect();
        match template.render(lookup) {
            Ok(value) => {
                assert_eq!(value.as_bytes(), expected.as_bytes());
                assert!(
                    !value
                        .as_bytes()
                        .iter()
                        .any(|b| matches!(b, b'\r' | b'\n' | 0)),
                    "{value:?}"
                );
                if !model_fields.is_empty() {
                    assert!(
                        value.is_sensitive(),
                        "a value built from the token is not sensitive"
                    );
                }
            }
            Err(_) => {
                assert!(
                    !model_fields.is_empty(),
                    "a fixed template failed to render"
                );
                assert!(
                    HeaderValue::from_str(&expected).is_err(),
                    "render refused the valid value {expected:?}"
                );
            }
        }
    }

    // The same template as a route header in a config.
    let grant = if input.static_grant {
        "grant: static\n    token: t"
    } else {
        "grant: client_credentials\n    token_url: https://auth.example/token\n    client_id: id\n    client_secret: s"
    };
    let yaml = format!(
        "listeners:\n  - bind: 127.0.0.1:0\nproviders:\n  p:\n    {grant}\nroutes:\n  - upstream: https://api.example\n    provider: p\n    headers:\n      {}: {}\n",
        yaml_quoted(&input.header_name),
        yaml_quoted(&input.template),
    );
    let loaded = Config::from_yaml(&yaml, Path::new("."));
    let name_ok = HeaderName::from_bytes(input.header_name.as_bytes())
        .is_ok_and(|name| !REFUSED_HEADERS.contains(&name.as_str()));
    let fields_ok = model.as_ref().is_some_and(|parts| {
        !input.static_grant
            || parts
                .iter()
                .all(|part| !matches!(part, Part::Field(name) if name != "token"))
    });
    assert_eq!(
        loaded.is_ok(),
        name_ok && fields_ok,
        "{yaml}\n{:?}",
        loaded.as_ref().err().map(ToString::to_string)
    );
    if let Ok(config) = loaded {
        let [(name, template)] = config.routes[0].headers.as_slice() else {
            panic!("one header was written");
        };
        assert!(name.as_str().eq_ignore_ascii_case(&input.header_name));
        let Ok(parsed) = &parsed else {
            panic!("a template refused by parse loaded");
        };
        assert!(template.fields().eq(parsed.fields()));
    }
});
