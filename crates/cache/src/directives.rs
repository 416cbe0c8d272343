//! `Cache-Control` (and request `Pragma`) parsing, RFC 9111 §5.2, and the targeted
//! fields that replace it for this cache (RFC 9213).

use std::time::Duration;

use http::header::{GetAll, HeaderName, CACHE_CONTROL, PRAGMA};
use http::{HeaderMap, HeaderValue};

/// The value RFC 9111 §1.2.2 says to use for a delta-seconds too large to represent.
const DELTA_SECONDS_MAX: u64 = 1 << 31;

/// The response directives a shared cache acts on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ResponseDirectives {
    pub(crate) no_store: bool,
    /// Qualified (`no-cache="field"`) or not: both are treated as unqualified, which
    /// RFC 9111 §5.2.2.4 allows.
    pub(crate) no_cache: bool,
    /// Qualified or not, as for `no_cache`: a shared cache does not store it.
    pub(crate) private: bool,
    pub(crate) public: bool,
    pub(crate) must_revalidate: bool,
    pub(crate) proxy_revalidate: bool,
    pub(crate) max_age: Option<Duration>,
    pub(crate) s_maxage: Option<Duration>,
    pub(crate) stale_while_revalidate: Option<Duration>,
    pub(crate) stale_if_error: Option<Duration>,
    /// The directives came from a targeted field (RFC 9213), not `Cache-Control`: the
    /// response's `Expires` does not count either.
    pub(crate) targeted: bool,
}

impl ResponseDirectives {
    /// The directives of the first of `targets` present in `headers` with a valid,
    /// non-empty value (RFC 9213 §2.2), else those of `Cache-Control`.
    pub(crate) fn parse(headers: &HeaderMap, targets: &[HeaderName]) -> Self {
        for target in targets {
            let lines = headers.get_all(target);
            if is_valid_targeted(lines.iter()) {
                let mut d = Self {
                    targeted: true,
                    ..Self::default()
                };
                // A targeted field is a Structured Fields dictionary (RFC 9213 §2.1):
                // a member's parameters (`max-age=60;x`) are not part of its value.
                for_each(lines, |name, value| {
                    d.set(name, value.map(|v| v.split(';').next().unwrap_or(v)))
                });
                return d;
            }
        }
        let mut d = Self::default();
        for_each(headers.get_all(CACHE_CONTROL), |name, value| {
            d.set(name, value)
        });
        d
    }

    fn set(&mut self, name: &str, value: Option<&str>) {
        match name {
            "no-store" => self.no_store = true,
            "no-cache" => self.no_cache = true,
            "private" => self.private = true,
            "public" => self.public = true,
            "must-revalidate" => self.must_revalidate = true,
            "proxy-revalidate" => self.proxy_revalidate = true,
            "max-age" => first(&mut self.max_age, value),
            "s-maxage" => first(&mut self.s_maxage, value),
            "stale-while-revalidate" => first(&mut self.stale_while_revalidate, value),
            "stale-if-error" => first(&mut self.stale_if_error, value),
            _ => {}
        }
    }

    /// Whether the response may ever be served stale (RFC 9111 §4.2.4): not when it must
    /// be revalidated, which `s-maxage` implies for a shared cache (§5.2.2.10).
    pub(crate) fn may_serve_stale(&self) -> bool {
        !(self.no_cache || self.must_revalidate || self.proxy_revalidate || self.s_maxage.is_some())
    }
}

/// The request directives a cache acts on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RequestDirectives {
    pub(crate) no_store: bool,
    /// `no-cache`, or `Pragma: no-cache` without a `Cache-Control` field (§5.4).
    pub(crate) no_cache: bool,
    pub(crate) max_age: Option<Duration>,
    /// `max-stale` without a value accepts any staleness: `Duration::MAX`.
    pub(crate) max_stale: Option<Duration>,
    pub(crate) min_fresh: Option<Duration>,
    pub(crate) only_if_cached: bool,
}

impl RequestDirectives {
    pub(crate) fn parse(headers: &HeaderMap) -> Self {
        let mut d = Self::default();
        if !headers.contains_key(CACHE_CONTROL) {
            d.no_cache = headers
                .get_all(PRAGMA)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .any(|t| t.trim().eq_ignore_ascii_case("no-cache"));
            return d;
        }
        for_each(headers.get_all(CACHE_CONTROL), |name, value| match name {
            "no-store" => d.no_store = true,
            "no-cache" => d.no_cache = true,
            "only-if-cached" => d.only_if_cached = true,
            "max-age" => first(&mut d.max_age, value),
            "min-fresh" => first(&mut d.min_fresh, value),
            "max-stale" if d.max_stale.is_none() => {
                d.max_stale = Some(match value {
                    None => Duration::MAX,
                    Some(v) => delta_seconds(v),
                })
            }
            _ => {}
        });
        d
    }
}

/// Keeps the first occurrence of a directive (RFC 9111 §4.2.1); a directive given no
/// value where one is required counts as 0, so that the response is stale rather than
/// fresh for ever.
fn first(slot: &mut Option<Duration>, value: Option<&str>) {
    if slot.is_none() {
        *slot = Some(value.map_or(Duration::ZERO, delta_seconds));
    }
}

/// A delta-seconds value: invalid ones are 0 (§4.2.1 encourages treating invalid freshness
/// information as stale), too large ones 2^31 (§1.2.2).
pub(crate) fn delta_seconds(value: &str) -> Duration {
    let value = value.trim();
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Duration::ZERO;
    }
    let secs = value.parse::<u64>().unwrap_or(DELTA_SECONDS_MAX);
    Duration::from_secs(secs.min(DELTA_SECONDS_MAX))
}

/// Whether a targeted field's lines hold a valid, non-empty dictionary (RFC 9213 §2.1):
/// at least one member, none empty, every key a Structured Fields key (upper case is
/// let through: `Surrogate-Control` is older than Structured Fields).
fn is_valid_targeted<'a>(mut lines: impl Iterator<Item = &'a HeaderValue>) -> bool {
    let mut members = 0;
    let valid = lines.all(|line| {
        let Ok(line) = line.to_str() else {
            return false;
        };
        split_directives(line).all(|member| {
            members += 1;
            let key = member.split(['=', ';']).next().unwrap_or("").trim();
            let mut bytes = key.bytes();
            bytes
                .next()
                .is_some_and(|b| b.is_ascii_alphabetic() || b == b'*')
                && bytes.all(|b| b.is_ascii_alphanumeric() || b"_-.*".contains(&b))
        })
    });
    valid && members > 0
}

/// Calls `f` with each directive of every line of a `Cache-Control`-like field: the name
/// in lower case and the value, unquoted. Commas inside quoted strings do not split
/// directives.
fn for_each(lines: GetAll<'_, HeaderValue>, mut f: impl FnMut(&str, Option<&str>)) {
    let mut lower = String::new();
    for line in lines {
        let Ok(line) = line.to_str() else { continue };
        for directive in split_directives(line) {
            let (name, value) = match directive.split_once('=') {
                Some((n, v)) => (n.trim(), Some(unquote(v.trim()))),
                None => (directive.trim(), None),
            };
            if name.is_empty() {
                continue;
            }
            let name = if name.bytes().any(|b| b.is_ascii_uppercase()) {
                lower.clear();
                lower.extend(name.chars().map(|c| c.to_ascii_lowercase()));
                lower.as_str()
            } else {
                name
            };
            f(name, value);
        }
    }
}

fn split_directives(line: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(line);
    std::iter::from_fn(move || {
        let s = rest?;
        let mut quoted = false;
        let mut escaped = false;
        for (i, c) in s.char_indices() {
            match c {
                _ if escaped => escaped = false,
                '\\' if quoted => escaped = true,
                '"' => quoted = !quoted,
                ',' if !quoted => {
                    rest = Some(&s[i + 1..]);
                    return Some(&s[..i]);
                }
                _ => {}
            }
        }
        rest = None;
        Some(s)
    })
}

fn unquote(value: &str) -> &str {
    value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(lines: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for l in lines {
            h.append(CACHE_CONTROL, l.parse().unwrap());
        }
        h
    }

    #[test]
    fn response_directives_across_lines_and_quotes() {
        let d = ResponseDirectives::parse(
            &headers(&[
                "Public, MAX-AGE=60, no-cache=\"set-cookie, x-a\"",
                "s-maxage=\"120\", max-age=5, stale-if-error=30",
            ]),
            &[],
        );
        assert!(d.public && d.no_cache && !d.private);
        assert_eq!(d.max_age, Some(Duration::from_secs(60)), "first wins");
        assert_eq!(d.s_maxage, Some(Duration::from_secs(120)));
        assert_eq!(d.stale_if_error, Some(Duration::from_secs(30)));
        assert!(!d.may_serve_stale());
    }

    #[test]
    fn invalid_and_huge_delta_seconds() {
        let d = ResponseDirectives::parse(
            &headers(&["max-age=abc, s-maxage=99999999999999999999"]),
            &[],
        );
        assert_eq!(d.max_age, Some(Duration::ZERO));
        assert_eq!(d.s_maxage, Some(Duration::from_secs(1 << 31)));
    }

    #[test]
    fn the_first_valid_targeted_field_replaces_cache_control() {
        let targets = [
            HeaderName::from_static("cdn-cache-control"),
            HeaderName::from_static("surrogate-control"),
        ];
        let mut h = headers(&["max-age=60"]);
        h.insert("surrogate-control", "no-store".parse().unwrap());
        let d = ResponseDirectives::parse(&h, &targets);
        assert!(d.no_store && d.targeted && d.max_age.is_none());
        h.insert(
            "cdn-cache-control",
            "max-age=10;a, s-maxage=5".parse().unwrap(),
        );
        let d = ResponseDirectives::parse(&h, &targets);
        assert_eq!(
            d.max_age,
            Some(Duration::from_secs(10)),
            "parameters dropped"
        );
        assert_eq!(d.s_maxage, Some(Duration::from_secs(5)));
        assert!(!d.no_store, "the first target wins");
        // Invalid or empty values are skipped, down to Cache-Control.
        for invalid in ["", "max-age=10,,", "(x)", "9lives"] {
            h.insert("cdn-cache-control", invalid.parse().unwrap());
            h.insert("surrogate-control", " ".parse().unwrap());
            let d = ResponseDirectives::parse(&h, &targets);
            assert!(!d.targeted, "{invalid:?}");
            assert_eq!(d.max_age, Some(Duration::from_secs(60)), "{invalid:?}");
        }
    }

    #[test]
    fn request_pragma_only_without_cache_control() {
        let mut h = HeaderMap::new();
        h.insert(PRAGMA, "no-cache".parse().unwrap());
        assert!(RequestDirectives::parse(&h).no_cache);
        h.insert(CACHE_CONTROL, "max-stale".parse().unwrap());
        let d = RequestDirectives::parse(&h);
        assert!(!d.no_cache);
        assert_eq!(d.max_stale, Some(Duration::MAX));
    }
}
