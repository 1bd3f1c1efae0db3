//! `routes[i]` -> [`RouteConfig`]: the match (normalised so that equal matches compare equal),
//! the upstream URL, the injected headers, limits, and the rules between routes (names, overlap).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use http::Method;
use http::header::HeaderName;
use http::uri::{Authority, Scheme};

use super::super::file::{MatchFile, Ordered, RouteFile};
use super::super::{
    GrantConfig, HeaderTemplate, ProviderConfig, RouteAccount, RouteConfig, RouteMatch, UpstreamUrl,
};
use super::byte_size::parse_byte_size;
use super::{Problems, WrittenProviders, check_account_name, check_name, parse_duration};

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Bodies up to this size are buffered for a replay after a 401 unless the route says otherwise.
const DEFAULT_MAX_REPLAY_BODY: u64 = 1024 * 1024;

/// Largest request body a route takes unless it says otherwise (partner API calls are small).
const DEFAULT_MAX_BODY: u64 = 10 * 1024 * 1024;

/// Headers that describe one connection and are never forwarded (RFC 9110 section 7.6.1).
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Checks every route, then the names and overlaps between them.
pub(super) fn routes(
    files: &[RouteFile],
    providers: &WrittenProviders,
    caller_names: &[&str],
    problems: &mut Problems,
) -> Vec<RouteConfig> {
    let mut routes = Vec::new();
    // Final name -> index of the route that has it.
    let mut names: HashMap<String, usize> = HashMap::new();
    // Unnamed routes seen so far per provider, for the -2, -3 suffixes.
    let mut unnamed: HashMap<&str, usize> = HashMap::new();
    // Matches of the routes so far, to find two that take the same requests.
    let mut matches: Vec<(usize, RouteMatch)> = Vec::new();

    for (i, file) in files.iter().enumerate() {
        let path = format!("routes[{i}]");

        let provider = providers.get(&file.provider);
        if provider.is_none() {
            let defined: Vec<&str> = providers.keys().map(String::as_str).collect();
            let defined = match defined.as_slice() {
                [] => "no providers are defined".to_string(),
                names => format!("defined: {}", names.join(", ")),
            };
            let message = format!("unknown provider `{}` ({defined})", file.provider);
            problems.add(format!("{path}.provider"), message);
        }
        let is_static = provider
            .and_then(|provider| provider.config.as_ref())
            .is_some_and(|config| matches!(config.grant, GrantConfig::Static { .. }));
        let account = provider
            .and_then(|provider| provider.config.as_ref())
            .and_then(|config| route_account(file, config, &path, problems));

        let name = match &file.name {
            Some(name) => problems
                .check(format!("{path}.name"), check_name(name))
                .map(|()| name.clone()),
            None if provider.is_some() => {
                let count = unnamed.entry(file.provider.as_str()).or_insert(0);
                *count += 1;
                Some(match *count {
                    1 => file.provider.clone(),
                    n => format!("{}-{n}", file.provider),
                })
            }
            None => None,
        };
        if let Some(name) = &name {
            if let Some(j) = names.get(name) {
                let message = if file.name.is_some() {
                    format!("`{name}` is already the name of routes[{j}]")
                } else {
                    format!(
                        "defaults to `{name}`, which routes[{j}] already uses; give this route a name"
                    )
                };
                problems.add(format!("{path}.name"), message);
            } else {
                names.insert(name.clone(), i);
            }
        }

        let matcher = route_match(file.matcher.as_ref(), &path, problems);
        if let Some(matcher) = &matcher {
            for (j, earlier) in &matches {
                if let Some(overlap) = overlap(earlier, matcher) {
                    let message = format!(
                        "takes the same requests as routes[{j}] ({overlap}); make the path_prefix, host or methods differ"
                    );
                    problems.add(format!("{path}.match"), message);
                }
            }
            matches.push((i, matcher.clone()));
        }

        let upstream = problems.check(format!("{path}.upstream"), parse_upstream(&file.upstream));
        let headers = headers(file.headers.as_ref(), &path, is_static, problems);
        if let Some(preset) = provider.and_then(|provider| provider.preset) {
            for required in preset.route_headers {
                let written = file.headers.as_ref().is_some_and(|headers| {
                    let same =
                        |(name, _): &(String, String)| name.eq_ignore_ascii_case(required.name);
                    headers.0.iter().any(same)
                });
                if !written {
                    let message = format!(
                        "must set {} (provider {} has preset {}): {}",
                        required.name, file.provider, preset.name, required.why
                    );
                    problems.add(format!("{path}.headers"), message);
                }
            }
        }
        let callers = match &file.callers {
            Some(names) => allowed_callers(names, caller_names, &path, problems).map(Some),
            None => Some(None),
        };
        let max_body = match &file.max_body {
            Some(text) => problems.check(format!("{path}.max_body"), parse_byte_size(text)),
            None => Some(DEFAULT_MAX_BODY),
        };
        let max_replay_body = match &file.max_replay_body {
            Some(text) => problems.check(format!("{path}.max_replay_body"), parse_byte_size(text)),
            None => Some(DEFAULT_MAX_REPLAY_BODY),
        };
        let timeout = match &file.timeout {
            Some(text) => problems.check(format!("{path}.timeout"), parse_duration(text)),
            None => Some(DEFAULT_TIMEOUT),
        };

        // Missing parts were recorded as problems: the whole load fails, so the route can go.
        let (
            Some(name),
            Some(matcher),
            Some(upstream),
            Some(account),
            Some(headers),
            Some(callers),
            Some(max_body),
            Some(max_replay_body),
            Some(timeout),
        ) = (
            name,
            matcher,
            upstream,
            account,
            headers,
            callers,
            max_body,
            max_replay_body,
            timeout,
        )
        else {
            continue;
        };
        routes.push(RouteConfig {
            name,
            matcher,
            strip_prefix: file.strip_prefix.unwrap_or(false),
            upstream,
            provider: file.provider.clone(),
            account,
            headers,
            callers,
            upgrade: file.upgrade.unwrap_or(false),
            max_body,
            max_replay_body,
            timeout,
        });
    }
    routes
}

/// `account` / `account_header`: exactly one for a provider with connected accounts, neither
/// for any other.
fn route_account(
    file: &RouteFile,
    provider: &ProviderConfig,
    path: &str,
    problems: &mut Problems,
) -> Option<RouteAccount> {
    let has_accounts = matches!(provider.grant, GrantConfig::AuthorizationCode(_));
    match (&file.account, &file.account_header) {
        (Some(_), Some(_)) => {
            let message = "write account or account_header, not both";
            problems.add(format!("{path}.account_header"), message);
            None
        }
        (None, None) if has_accounts => {
            let message = format!(
                "provider {} connects accounts (grant authorization_code): name one with \
                 account, or let the caller choose with account_header",
                file.provider
            );
            problems.add(format!("{path}.account"), message);
            None
        }
        (None, None) => Some(RouteAccount::None),
        (Some(_), None) | (None, Some(_)) if !has_accounts => {
            let field = if file.account.is_some() {
                "account"
            } else {
                "account_header"
            };
            let message = format!(
                "provider {} has no connected accounts (only grant authorization_code has)",
                file.provider
            );
            problems.add(format!("{path}.{field}"), message);
            None
        }
        (Some(account), None) => problems
            .check(format!("{path}.account"), check_account_name(account))
            .map(|()| RouteAccount::Fixed(account.clone())),
        (None, Some(header)) => problems
            .check(format!("{path}.account_header"), header_name(header))
            .map(RouteAccount::FromHeader),
    }
}

/// `routes[i].callers`: names from the top-level `callers`, at least one.
fn allowed_callers(
    names: &[String],
    defined: &[&str],
    path: &str,
    problems: &mut Problems,
) -> Option<Vec<String>> {
    if names.is_empty() {
        let message = "is empty, so no caller could use the route; remove it to allow every caller";
        problems.add(format!("{path}.callers"), message);
        return None;
    }
    let mut ok = true;
    for (i, name) in names.iter().enumerate() {
        if !defined.contains(&name.as_str()) {
            let defined = match defined {
                [] => "no callers are defined".to_string(),
                names => format!("defined: {}", names.join(", ")),
            };
            problems.add(
                format!("{path}.callers[{i}]"),
                format!("unknown caller `{name}` ({defined})"),
            );
            ok = false;
        }
    }
    ok.then(|| names.to_vec())
}

fn route_match(
    file: Option<&MatchFile>,
    path: &str,
    problems: &mut Problems,
) -> Option<RouteMatch> {
    let Some(file) = file else {
        return Some(RouteMatch {
            path_prefix: "/".into(),
            host: None,
            methods: None,
        });
    };
    let path_prefix = match &file.path_prefix {
        Some(text) => problems.check(
            format!("{path}.match.path_prefix"),
            normalize_path_prefix(text),
        ),
        None => Some("/".into()),
    };
    let host = match &file.host {
        Some(text) => problems
            .check(format!("{path}.match.host"), normalize_host(text))
            .map(Some),
        None => Some(None),
    };
    let methods = match &file.methods {
        Some(list) => methods(list, path, problems).map(Some),
        None => Some(None),
    };
    Some(RouteMatch {
        path_prefix: path_prefix?,
        host: host?,
        methods: methods?,
    })
}

fn methods(list: &[String], path: &str, problems: &mut Problems) -> Option<Vec<Method>> {
    if list.is_empty() {
        let message = "an empty list matches nothing; leave methods out to accept every method";
        problems.add(format!("{path}.match.methods"), message);
        return None;
    }
    let mut methods = Vec::new();
    let mut failed = false;
    for (j, text) in list.iter().enumerate() {
        let method_path = format!("{path}.match.methods[{j}]");
        match problems.check(&method_path, parse_method(text)) {
            Some(method) if methods.contains(&method) => {
                problems.add(method_path, format!("{method} is listed twice"));
                failed = true;
            }
            Some(method) => methods.push(method),
            None => failed = true,
        }
    }
    (!failed).then_some(methods)
}

fn parse_method(text: &str) -> Result<Method, String> {
    if text == "CONNECT" || text == "TRACE" {
        return Err(format!(
            "{text} is never routed: the proxy answers it with 405"
        ));
    }
    if text.chars().any(|c| c.is_ascii_lowercase()) {
        return Err(format!(
            "`{text}` is not upper-case; methods are case-sensitive (GET, POST)"
        ));
    }
    Method::from_bytes(text.as_bytes()).map_err(|_| format!("`{text}` is not a valid method"))
}

/// `/api/v1/` -> `/api/v1`; the root stays `/`. Refuses what a request path could not equal
/// once normalised (`.`/`..` segments, also encoded, `//`, `%2F`, `%5C`, `%00`) and what is not a
/// path (`?`, `#`, spaces).
fn normalize_path_prefix(text: &str) -> Result<String, String> {
    if !text.starts_with('/') {
        return Err(format!("`{text}` must start with /"));
    }
    if text.contains(['?', '#']) {
        return Err(format!("`{text}` must be a path only, without ? or #"));
    }
    if text.contains("//") {
        return Err(format!("`{text}` must not contain //"));
    }
    // What `route::normalize_path` resolves in a request path: `.` and `..`, also as `%2e` and
    // with `;` parameters.
    let dot_segment = |segment: &str| {
        let bare = segment.split(';').next().unwrap_or_default();
        let bare = bare.to_ascii_lowercase().replace("%2e", ".");
        bare == "." || bare == ".."
    };
    if text.split('/').any(dot_segment) {
        return Err(format!("`{text}` must not contain . or .. segments"));
    }
    // And what it refuses: a request path holding these never reaches a route.
    let lower = text.to_ascii_lowercase();
    if ["%2f", "%5c", "%00"]
        .iter()
        .any(|code| lower.contains(code))
    {
        return Err(format!(
            "`{text}` must not contain %2F, %5C or %00: requests holding them are refused"
        ));
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || "/-._~!$&'()*+,;=:@%".contains(c);
    if let Some(c) = text.chars().find(|c| !allowed(*c)) {
        return Err(format!(
            "`{text}` holds {c:?}, which a URL path cannot; percent-encode it"
        ));
    }
    let trimmed = text.trim_end_matches('/');
    Ok(if trimmed.is_empty() { "/" } else { trimmed }.to_string())
}

/// A DNS name, lower-cased, or an IP address in canonical form; without port, scheme or path.
fn normalize_host(text: &str) -> Result<String, String> {
    let host = text.to_ascii_lowercase();
    // Canonical (`0:0::1` is `::1`), so routes naming one address in two spellings overlap.
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(ip.to_string());
    }
    let hint = if host.contains("://") || host.contains('/') {
        " (no scheme or path: only the host name)"
    } else if host.starts_with('[') || host.contains(':') {
        " (no port; an IPv6 address is written without brackets)"
    } else {
        ""
    };
    let name = host.strip_suffix('.').unwrap_or(&host);
    let label_ok = |label: &str| {
        (1..=63).contains(&label.len())
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    };
    if hint.is_empty() && name.len() <= 253 && name.split('.').all(label_ok) {
        return Ok(name.to_string());
    }
    Err(format!("`{text}` is not a DNS name or IP address{hint}"))
}

/// `http` or `https`, a host, an optional base path; no query, fragment or userinfo. The text
/// is never quoted back: userinfo could hold a password.
fn parse_upstream(text: &str) -> Result<UpstreamUrl, String> {
    let url = reqwest::Url::parse(text).map_err(|error| format!("not a valid URL: {error}"))?;
    let scheme = match url.scheme() {
        "https" => Scheme::HTTPS,
        "http" => Scheme::HTTP,
        other => return Err(format!("must be an http or https URL, not {other}")),
    };
    let host = match url.host_str() {
        None | Some("") => return Err("needs a host".into()),
        Some(host) => host,
    };
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry credentials (user:password@): the proxy injects them".into());
    }
    if url.query().is_some() {
        return Err("must not have a query (?...): the caller's query is forwarded".into());
    }
    if url.fragment().is_some() {
        return Err("must not have a #fragment".into());
    }
    let authority = match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    };
    let authority: Authority = authority
        .parse()
        .map_err(|_| "does not have a valid host and port".to_string())?;
    Ok(UpstreamUrl {
        scheme,
        authority,
        base_path: url.path().trim_end_matches('/').to_string(),
    })
}

fn headers(
    file: Option<&Ordered<String>>,
    route_path: &str,
    is_static: bool,
    problems: &mut Problems,
) -> Option<Vec<(HeaderName, HeaderTemplate)>> {
    let Some(file) = file else {
        return Some(Vec::new());
    };
    let mut headers: Vec<(HeaderName, HeaderTemplate)> = Vec::new();
    // Names as written, to point at the earlier spelling of a repeated header.
    let mut written: Vec<(HeaderName, &str)> = Vec::new();
    let mut failed = false;
    for (name, value) in &file.0 {
        let path = format!("{route_path}.headers.{name}");
        let header = header_name(name).and_then(|header_name| {
            if let Some((_, earlier)) = written.iter().find(|(seen, _)| *seen == header_name) {
                return Err(format!("repeats {earlier} (header names ignore case)"));
            }
            written.push((header_name.clone(), name));
            let template = HeaderTemplate::parse(value)?;
            let unavailable = template
                .fields()
                .find(|field| is_static && *field != "token");
            if let Some(field) = unavailable {
                return Err(format!(
                    "{{{field}}} is not available: grant static provides only {{token}}"
                ));
            }
            Ok((header_name, template))
        });
        match problems.check(path, header) {
            Some(header) => headers.push(header),
            None => failed = true,
        }
    }
    (!failed).then_some(headers)
}

fn header_name(text: &str) -> Result<HeaderName, String> {
    let name = HeaderName::from_bytes(text.as_bytes())
        .map_err(|_| format!("`{text}` is not a valid header name"))?;
    let reason = match name.as_str() {
        n if HOP_BY_HOP.contains(&n) => {
            "is hop-by-hop: it describes one connection and is never forwarded"
        }
        "host" => "is set from the upstream URL",
        "content-length" => "is set from the body",
        "authorization" => "is set by the proxy from the provider's scheme and token",
        "proxy-authorization" => "is the caller's credential for the proxy and is never forwarded",
        _ => return Ok(name),
    };
    Err(format!("{text} {reason}"))
}

/// How two matches overlap, described for an error message; `None` when no request fits both.
fn overlap(a: &RouteMatch, b: &RouteMatch) -> Option<String> {
    if a.path_prefix != b.path_prefix || a.host != b.host {
        return None;
    }
    let methods = match (&a.methods, &b.methods) {
        (None, None) => "every method".to_string(),
        (Some(only), None) | (None, Some(only)) => join_methods(only),
        (Some(x), Some(y)) => {
            let common: Vec<Method> = x.iter().filter(|m| y.contains(m)).cloned().collect();
            if common.is_empty() {
                return None;
            }
            join_methods(&common)
        }
    };
    let host = match &a.host {
        Some(host) => format!("host {host}"),
        None => "any host".to_string(),
    };
    Some(format!("path_prefix {}, {host}, {methods}", a.path_prefix))
}

fn join_methods(methods: &[Method]) -> String {
    let names: Vec<&str> = methods.iter().map(Method::as_str).collect();
    names.join(" ")
}

#[cfg(test)]
mod tests;
