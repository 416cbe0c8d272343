//! Cache keys (RFC 9111 §2): the primary key is the target URI, the secondary key the
//! request header values that the stored response's `Vary` names (§4.1).

use http::header::{ACCEPT, ACCEPT_CHARSET, ACCEPT_ENCODING, ACCEPT_LANGUAGE, HOST, VARY};
use http::{HeaderMap, HeaderName, HeaderValue, Uri};

/// The primary cache key of a request: `scheme://authority/path?query`, with the scheme
/// and host in lower case and a default port left out.
///
/// The authority is the URI's when it has one (absolute-form), else the `Host` header
/// (origin-form, as a reverse proxy mostly sees); the scheme is the URI's, else `http`.
/// The key names the resource, not a backend: a response fetched from any backend serves
/// every client that asks for the same URL.
pub(crate) fn primary_key(uri: &Uri, headers: &HeaderMap) -> String {
    let scheme = uri.scheme_str().unwrap_or("http");
    let authority = match uri.authority() {
        Some(a) => a.as_str(),
        None => headers
            .get(HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or(""),
    };
    let path = match uri.path() {
        "" => "/",
        p => p,
    };
    let query = uri.query();
    let mut key = String::with_capacity(
        scheme.len() + 3 + authority.len() + path.len() + query.map_or(0, |q| q.len() + 1),
    );
    push_origin(&mut key, scheme, authority);
    key.push_str(path);
    if let Some(q) = query {
        key.push('?');
        key.push_str(q);
    }
    key
}

fn push_origin(key: &mut String, scheme: &str, authority: &str) {
    push_lower(key, scheme);
    key.push_str("://");
    let default_port = match scheme {
        s if s.eq_ignore_ascii_case("http") => Some(":80"),
        s if s.eq_ignore_ascii_case("https") => Some(":443"),
        _ => None,
    };
    let authority = default_port
        .and_then(|port| authority.strip_suffix(port))
        .unwrap_or(authority);
    push_lower(key, authority);
}

fn push_lower(key: &mut String, s: &str) {
    if s.bytes().any(|b| b.is_ascii_uppercase()) {
        key.extend(s.chars().map(|c| c.to_ascii_lowercase()));
    } else {
        key.push_str(s);
    }
}

/// The `scheme://authority` part of a primary key.
pub(crate) fn origin_of(key: &str) -> &str {
    let after_scheme = key.find("://").map_or(0, |i| i + 3);
    let end = key[after_scheme..]
        .find('/')
        .map_or(key.len(), |i| after_scheme + i);
    &key[..end]
}

/// The primary key of a `Location` or `Content-Location` value relative to the request
/// whose key is `base`, or `None` when it names another origin (RFC 9111 §4.4 only
/// invalidates URIs on the same host) or does not parse.
pub(crate) fn resolve_same_origin(base: &str, reference: &HeaderValue) -> Option<String> {
    let reference = reference.to_str().ok()?.trim();
    let reference = reference.split('#').next().unwrap_or("");
    let origin = origin_of(base);
    let same_origin = |absolute: &str| {
        let key = primary_key(&absolute.parse().ok()?, &HeaderMap::new());
        (origin_of(&key) == origin).then_some(key)
    };
    if reference.contains("://") {
        return same_origin(reference);
    }
    if reference.starts_with("//") {
        // A network-path reference: the base's scheme, its own authority.
        let scheme = &origin[..origin.find("://")?];
        return same_origin(&format!("{scheme}:{reference}"));
    }
    if reference.is_empty() {
        return None;
    }
    let mut key = String::from(origin);
    if reference.starts_with('/') {
        key.push_str(reference);
    } else {
        // Relative to the base path's directory (RFC 3986 §5.2.3; dot segments are kept).
        let base_path = base[origin.len()..].split('?').next().unwrap_or("/");
        let dir = base_path.rfind('/').map_or("/", |i| &base_path[..=i]);
        key.push_str(dir);
        key.push_str(reference);
    }
    Some(key)
}

/// The request header values a stored response was selected with: one per field its
/// `Vary` names, `None` where the request had no such field.
pub(crate) type VaryValues = Box<[(HeaderName, Option<HeaderValue>)]>;

/// What a response's `Vary` says.
#[derive(Debug)]
pub(crate) enum Vary {
    /// The response can be reused for requests that match on these fields (none: any).
    Fields(Vec<HeaderName>),
    /// `Vary: *`: it never matches another request (§4.1), so it is not stored.
    Any,
}

impl Vary {
    pub(crate) fn of(headers: &HeaderMap) -> Vary {
        let mut fields = Vec::new();
        for line in headers.get_all(VARY) {
            let Ok(line) = line.to_str() else {
                return Vary::Any;
            };
            for field in line.split(',').map(str::trim).filter(|f| !f.is_empty()) {
                if field == "*" {
                    return Vary::Any;
                }
                match HeaderName::from_bytes(field.as_bytes()) {
                    Ok(name) if !fields.contains(&name) => fields.push(name),
                    Ok(_) => {}
                    Err(_) => return Vary::Any,
                }
            }
        }
        Vary::Fields(fields)
    }
}

/// The values of `fields` in `request`.
pub(crate) fn vary_values(fields: &[HeaderName], request: &HeaderMap) -> VaryValues {
    fields
        .iter()
        .map(|name| (name.clone(), combined(request, name)))
        .collect()
}

/// Whether `request` has the values a response was stored with: the same fields present,
/// with the same list members (RFC 9110 §5.6.1) in the same order, compared with runs of
/// whitespace as one space, so that `a,b` matches `a, b` and lines match their combination.
/// In the content-negotiation fields (`Accept`, `Accept-Charset`, `Accept-Encoding`,
/// `Accept-Language`) order, case and whitespace do not matter either: `en-US, fr` matches
/// `fr,en-us`. (Nothing is allocated: this runs on every hit.)
pub(crate) fn vary_matches(
    stored: &[(HeaderName, Option<HeaderValue>)],
    request: &HeaderMap,
) -> bool {
    stored.iter().all(|(name, value)| {
        let lines = request.get_all(name);
        match value {
            None => lines.iter().next().is_none(),
            Some(_) if lines.iter().next().is_none() => false,
            Some(v) if is_negotiation(name) => {
                let stored = || members(std::iter::once(v));
                let asked = || members(lines.iter());
                stored().all(|m| contains(asked(), m)) && asked().all(|m| contains(stored(), m))
            }
            Some(v) => {
                let (mut a, mut b) = (members(std::iter::once(v)), members(lines.iter()));
                loop {
                    match (a.next(), b.next()) {
                        (None, None) => break true,
                        (Some(x), Some(y)) if collapsed(x).eq(collapsed(y)) => {}
                        _ => break false,
                    }
                }
            }
        }
    })
}

/// The fields whose members are compared as a set, ignoring case and whitespace.
fn is_negotiation(name: &HeaderName) -> bool {
    *name == ACCEPT
        || *name == ACCEPT_CHARSET
        || *name == ACCEPT_ENCODING
        || *name == ACCEPT_LANGUAGE
}

/// Whether `list` has `member`, ignoring case and whitespace.
fn contains<'a>(mut list: impl Iterator<Item = &'a [u8]>, member: &[u8]) -> bool {
    list.any(|m| folded(m).eq(folded(member)))
}

/// The non-empty members of a field's lines, trimmed.
fn members<'a>(lines: impl Iterator<Item = &'a HeaderValue>) -> impl Iterator<Item = &'a [u8]> {
    lines
        .flat_map(|line| line.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|m| !m.is_empty())
}

fn is_space(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// A member with each run of whitespace as one space.
fn collapsed(member: &[u8]) -> impl Iterator<Item = u8> + '_ {
    let mut after_space = false;
    member.iter().filter_map(move |&b| {
        let space = is_space(b);
        let out = if space {
            (!after_space).then_some(b' ')
        } else {
            Some(b)
        };
        after_space = space;
        out
    })
}

/// A member without whitespace, in lower case.
fn folded(member: &[u8]) -> impl Iterator<Item = u8> + '_ {
    member
        .iter()
        .filter(|&&b| !is_space(b))
        .map(u8::to_ascii_lowercase)
}

/// A field's lines joined with `", "`, as RFC 9110 §5.3 combines them.
fn combined(headers: &HeaderMap, name: &HeaderName) -> Option<HeaderValue> {
    let mut lines = headers.get_all(name).iter();
    let first = lines.next()?;
    let Some(second) = lines.next() else {
        return Some(first.clone());
    };
    let mut joined = first.as_bytes().to_vec();
    for line in std::iter::once(second).chain(lines) {
        joined.extend_from_slice(b", ");
        joined.extend_from_slice(line.as_bytes());
    }
    HeaderValue::from_bytes(&joined).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(uri: &str, host: Option<&str>) -> String {
        let mut h = HeaderMap::new();
        if let Some(host) = host {
            h.insert(HOST, host.parse().unwrap());
        }
        primary_key(&uri.parse().unwrap(), &h)
    }

    #[test]
    fn origin_form_takes_the_host_header() {
        assert_eq!(
            key("/a?b=1", Some("Example.COM")),
            "http://example.com/a?b=1"
        );
        assert_eq!(key("https://x.org:443", None), "https://x.org/");
        assert_eq!(
            key("http://x.org:8080/p", Some("other")),
            "http://x.org:8080/p"
        );
    }

    #[test]
    fn location_resolution() {
        let base = "http://a.com/x/y?q";
        let v = |s: &str| HeaderValue::from_str(s).unwrap();
        assert_eq!(
            resolve_same_origin(base, &v("/z")).as_deref(),
            Some("http://a.com/z")
        );
        assert_eq!(
            resolve_same_origin(base, &v("z?1")).as_deref(),
            Some("http://a.com/x/z?1")
        );
        assert_eq!(
            resolve_same_origin(base, &v("HTTP://A.com:80/w")).as_deref(),
            Some("http://a.com/w")
        );
        assert_eq!(resolve_same_origin(base, &v("http://b.com/w")), None);
        assert_eq!(resolve_same_origin(base, &v("//b.com/w")), None);
    }

    #[test]
    fn vary_combines_lines() {
        let mut req = HeaderMap::new();
        req.append("accept", "a".parse().unwrap());
        req.append("accept", "b".parse().unwrap());
        let stored = vary_values(&[HeaderName::from_static("accept")], &req);
        assert_eq!(stored[0].1.as_ref().unwrap(), "a, b");
        assert!(vary_matches(&stored, &req));
        let mut other = HeaderMap::new();
        other.insert("accept", "a, b".parse().unwrap());
        assert!(vary_matches(&stored, &other));
        other.insert("accept", "a".parse().unwrap());
        assert!(!vary_matches(&stored, &other));
    }

    #[test]
    fn vary_normalises_whitespace_and_negotiation_lists() {
        let h = |pairs: &[(&'static str, &str)]| {
            let mut m = HeaderMap::new();
            for (n, v) in pairs {
                m.append(*n, v.parse().unwrap());
            }
            m
        };
        let lang = HeaderName::from_static("accept-language");
        let ua = HeaderName::from_static("user-agent");
        let stored = vary_values(
            &[lang.clone(), ua.clone()],
            &h(&[
                ("accept-language", "en-US, fr;q=0.8"),
                ("user-agent", "A  b,c"),
            ]),
        );
        let matches = |req: &[(&'static str, &str)]| vary_matches(&stored, &h(req));
        assert!(matches(&[
            ("accept-language", "fr; q=0.8,EN-us"),
            ("user-agent", "A b , c")
        ]));
        assert!(matches(&[
            ("accept-language", "fr;q=0.8"),
            ("accept-language", "en-us,"),
            ("user-agent", "A\tb,c"),
        ]));
        assert!(!matches(&[
            ("accept-language", "fr;q=0.8"),
            ("user-agent", "A b,c")
        ]));
        assert!(!matches(&[
            ("accept-language", "fr;q=0.8, en-us"),
            ("user-agent", "c, A b")
        ]));
        assert!(!matches(&[
            ("accept-language", "en-us, fr;q=0.8, de"),
            ("user-agent", "A b,c")
        ]));
        assert!(!matches(&[("user-agent", "A b,c")]));
    }
}
