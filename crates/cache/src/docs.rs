//! How the cache behaves, in full: what it stores, how it keys and uses stored
//! responses, coalescing, invalidation, the `Cache-Status` it reports, and what its
//! service requires. The crate's own page has the overview and an example.
//!
//! # What is stored
//!
//! Responses to GET whose status is heuristically cacheable (200, 203, 204, 300, 301,
//! 308, 404, 405, 410, 414, 501), or any other final status (302, 307, 400, 500, …; not
//! 304 or 416, and a 206 as the 200 it is part of) with explicit freshness or `public`,
//! unless:
//!
//! - the request said `no-store`, or the response `no-store` or `private` (qualified
//!   `private="…"` and `no-cache="…"` count as unqualified, which RFC 9111 allows);
//! - the response has `Vary: *`;
//! - the request carried `Authorization` and the response does not say `public`,
//!   `s-maxage` or `must-revalidate` (RFC 9111 §3.5);
//! - the response sets a cookie and does not say `public`. Even then the stored copy has
//!   no `Set-Cookie`: the client whose request fetched the response gets its cookie,
//!   nobody else ever does;
//! - it has no freshness: neither `s-maxage`, `max-age`, `Expires`, nor a heuristic one
//!   (for the heuristically cacheable statuses, or `public`): 10 % of `Date` −
//!   `Last-Modified`, at most [`CacheConfig::heuristic_max`] (24 h), or without
//!   `Last-Modified` [`CacheConfig::ttl`] (a `ttl` of 0 turns both off). A response stale
//!   on arrival is stored only if it can be revalidated (`ETag`, `Last-Modified`) or
//!   served stale;
//! - its body exceeds [`CacheConfig::max_object_size`] (8 MiB by default), is cut short,
//!   or has trailers.
//!
//! # Targeted cache control
//!
//! The fields of [`CacheConfig::targeted_fields`] (`CDN-Cache-Control`, RFC 9213, then
//! `Surrogate-Control`, by default) are directives for this cache: the first of them a
//! response has with a valid, non-empty value (a dictionary: `max-age=60, no-store`;
//! member parameters are ignored) replaces its `Cache-Control` and `Expires` here, either
//! way (`no-store` there over a fresh `Cache-Control`, or a lifetime over
//! `Cache-Control: no-store`). Clients never see them: they are removed from every
//! response, and kept aside in the stored one, where a `304` updates them.
//!
//! A 206 is judged as the 200 it is (part of): one holding the whole representation is
//! stored as its 200, one range of it as a part (see below; parts stay in this instance,
//! never in the shared tier). Protocol upgrades bypass the cache; HEAD is answered from
//! a stored GET but a HEAD response is not stored.
//!
//! The response streams to its client as it arrives, frame by frame, while a copy is kept
//! aside; it is stored once its body has ended. Stored bodies are [`Bytes`](bytes::Bytes)
//! shared by every hit, never copied per hit.
//!
//! # Keys
//!
//! A stored response is found by its URL, `scheme://authority/path?query`: the authority
//! from the request URI when it is absolute, else from `Host` (a reverse proxy mostly
//! sees origin-form URIs); the scheme from the URI, else `http`; scheme and host in lower
//! case, default ports dropped. Under one URL live the variants of its `Vary` header: one
//! per set of values of the request fields it names (up to 16 per URL). Values compare
//! member by member with whitespace normalised (`a,b` as `a, b`, several lines as their
//! combination); in `Accept`, `Accept-Charset`, `Accept-Encoding` and `Accept-Language`
//! regardless of order and case too (`en-US, fr` as `fr,en-us`). The key names the
//! resource, not the backend that served it: with several backends, a response fetched
//! from any of them serves every client.
//!
//! # Using a stored response
//!
//! A response is fresh while its age (RFC 9111 §4.2.3: the `Date` compared with the wall
//! clock once when it arrives, its `Age`, the time it took to arrive, then time resident
//! on tokio's clock) is below its freshness lifetime (`s-maxage`, else `max-age`, else
//! `Expires` − `Date`, else the heuristic). Every answer from the cache carries `Age`.
//!
//! An upstream `Age` counts only as a delta-seconds (digits): one that is negative, a
//! fraction, or has a suffix or parameter counts as absent; of a list or several lines, the
//! first valid value counts. `Expires` is read in the three HTTP-date formats
//! (IMF-fixdate, RFC 850, asctime); one that does not parse (`0`) means already expired,
//! and a `Date` that does not parse is taken as the arrival time.
//! The request's `no-cache` (or `Pragma: no-cache` when it has no `Cache-Control`),
//! `max-age`, `min-fresh`, `max-stale` and `only-if-cached` (a `504` when nothing usable
//! is stored) are honoured; its `no-store` lets it be answered from the cache but stores
//! nothing of its exchange (not even a `304`'s update).
//!
//! A stale response with `ETag` or `Last-Modified` is revalidated with `If-None-Match` /
//! `If-Modified-Since`; a `304` refreshes the stored headers (RFC 9111 §3.2, §4.3.4):
//! every field it carries replaces the stored one (`ETag`, `Content-Encoding`,
//! `Content-Range`, `Content-MD5` too) except `Content-Length`, hop-by-hop fields, `Age`
//! and `Set-Cookie` (passed on to the client whose request got it, never stored, as for a
//! full response); the stored body is served. A client's own `If-None-Match` / `If-Modified-Since` that match
//! the response it is given get a `304` from the cache.
//!
//! # Range requests
//!
//! A GET with `Range: bytes=…` (RFC 9110 §14) is answered from a stored `200` like any
//! other request, then:
//!
//! - one satisfiable range (`0-499`, `500-`, the suffix `-500`; past the end is cut to
//!   it) gets `206 Partial Content` with `Content-Range: bytes 0-499/1234` and that
//!   part's `Content-Length`; the part is a slice of the stored body, not a copy;
//! - several satisfiable ranges get a `206` `multipart/byteranges` (RFC 9110 §14.6):
//!   `Content-Type: multipart/byteranges; boundary=<16 random hex digits>`, each part
//!   with the representation's `Content-Type` and its `Content-Range`, in the order
//!   asked for. Ranges that overlap or touch are coalesced into one (so no byte is sent
//!   twice, however often a request repeats a range), and what is left of one range is a
//!   plain `206`; unsatisfiable ones are left out;
//! - no satisfiable range (`1234-`, `-0`) gets `416 Range Not Satisfiable` with
//!   `Content-Range: bytes */1234` and no body;
//! - a `Range` that does not parse (another unit, `5-1`) or has more than 16 ranges is
//!   ignored: the full `200` is served (RFC 9110 §14.2 lets a server ignore `Range`; 16
//!   parts bound what one request costs);
//! - `If-Range` (RFC 9110 §13.1.5) lets the range apply only when it matches the stored
//!   response: an entity tag by strong comparison with its `ETag` (a weak tag never
//!   matches), a date when it is exactly its `Last-Modified` (itself at least a second
//!   older than its `Date`). When it does not, the full `200` is served;
//! - the client's own `If-None-Match` / `If-Modified-Since` come first (a `304`), and a
//!   HEAD, or a stored status other than `200`, ignores `Range`.
//!
//! A range request that misses goes upstream as it is (its `Range` and `If-Range`) and
//! its `206` is passed on. It waits for a fetch of the URL already in flight (and is
//! answered from its response) but never leads one: a full GET does not wait for a
//! partial response. When the origin ignores the range and answers a full `200`, that is
//! stored. A stale response revalidated for a range request keeps the client's
//! `If-Range` with the `Range` next to the stored validators: a `304` answers the range
//! from the refreshed response, otherwise the origin's answer is the client's. A
//! background refresh fetches the whole response (no `Range`, no `If-Range`); one of
//! stored parts, the range that was asked for (see below).
//!
//! ## Partial responses
//!
//! The origin's `206` is stored by the rules for its `200` (freshness, `no-store`,
//! `Vary`, …), without its `Content-Range`:
//!
//! - holding the whole representation (`Content-Range: bytes 0-1233/1234` and as many
//!   bytes, as an origin may answer `bytes=0-`), as the complete `200` it amounts to;
//! - holding one range (`bytes 500-999/1234`), as a part of the representation, when it
//!   has a strong validator (RFC 9110 §8.8: an `ETag` that is not weak, else a
//!   `Last-Modified` at least a second before its `Date`) and the representation is no
//!   larger than `max_object_size`. A body shorter or longer than its `Content-Range`
//!   says is not stored; neither is a `multipart/byteranges` one.
//!
//! A later part for the same URL and `Vary` values with the same validator and length is
//! combined with the stored parts (RFC 9111 §3.4); one with another validator replaces
//! them. Once the parts cover the representation, they are stored as its `200` (the
//! newest part's fields, `Content-Length` the whole length) and serve full requests,
//! ranges and revalidations like any stored response. A complete response replaces the
//! parts; a part of a representation whose complete response is stored (a range that
//! went to the origin because that response was stale) freshens it: the part's fields
//! replace the stored ones, as a `304`'s would, and the stored body stays.
//!
//! While partial, the stored response answers, while fresh, a GET whose ranges it holds
//! (`206`, or `multipart/byteranges`, cut from the parts without a copy) or knows none
//! is satisfiable (`416`: it knows the length). Stale, parts that hold what is asked
//! are served stale as a complete response would be (see "Serving stale": not when
//! `no-cache`, `must-revalidate`, `proxy-revalidate` or `s-maxage` forbid it):
//!
//! - within `stale-while-revalidate`, at once (`detail=stale-while-revalidate`, with
//!   their `Age`), while a background refresh (one per URL at a time) sends the range
//!   to the origin with their strong validator in `If-None-Match`: a `304` freshens
//!   them, a new `206` or `200` is stored by the rules above;
//! - within the request's `max-stale`, at once (`detail=max-stale`).
//!
//! Otherwise (or to be validated, as `no-cache` asks) they are revalidated in the
//! foreground: the range goes to the origin with their strong validator in
//! `If-None-Match` (`fwd=stale`); a `304` freshens them and they answer, and an origin
//! that fails (an error, or 500, 502, 503, 504) within `stale-if-error` gets them served
//! stale (`detail=stale-if-error`). Anything else (a range not held, a full GET or HEAD,
//! an `If-Range` that does not match) goes upstream, as a miss would (`fwd=partial`),
//! and the answer is stored by the rules above.
//!
//! Parts count against `max_size` like any stored response (their bytes, fields and a
//! little per run). Two parts arriving at the same moment may race, the later one's
//! store winning (no lock is taken for them): the other is fetched again when asked for.
//!
//! # Serving stale
//!
//! Stale responses are served, unless the response forbids it (`no-cache`,
//! `must-revalidate`, `proxy-revalidate`, `s-maxage`):
//!
//! - within `stale-while-revalidate` (or [`CacheConfig::stale_while_revalidate`]): at
//!   once, while a clone of the inner service refreshes it on a `tokio::spawn`ed task
//!   (one per URL at a time); stored parts too, for the ranges they hold, refreshed
//!   with the range asked for (see "Partial responses");
//! - within `stale-if-error` (or [`CacheConfig::stale_if_error`]): when the upstream
//!   fails: an error (connect failure, no backend available, a timeout below this layer)
//!   or a 500, 502, 503 or 504.
//!
//! # Coalescing
//!
//! Concurrent misses for one URL make one upstream request: the first leads, the others
//! wait (up to [`CacheConfig::coalesce_wait`]) until its response is stored and answer
//! from it. When it is not storable, or not stored in time, they go upstream themselves
//! (so does a request for another `Vary` variant, once the leader's response is stored).
//! Requests with `no-cache` or `no-store` neither wait nor are waited for. The waiting
//! ends when the leader's client has read the whole body: the response is stored then.
//!
//! # Invalidation
//!
//! A 2xx or 3xx answer to an unsafe request (anything but GET, HEAD, OPTIONS, TRACE)
//! removes what is stored for its URL and for its `Location` and `Content-Location` on
//! the same origin (RFC 9111 §4.4). Operators purge through [`CacheHandle`].
//!
//! # `Cache-Status`
//!
//! Every response through the layer gets a `Cache-Status` member (RFC 9211), appended
//! after those of caches nearer the origin. `ttl` is the remaining freshness in seconds
//! (negative when stale):
//!
//! | value | meaning |
//! |---|---|
//! | `switchyard; hit; ttl=55` | fresh stored response (or a `304` to the client's own validators, or a `206`/`416` to its `Range`) |
//! | `switchyard; hit; ttl=-3; detail=stale-while-revalidate` | stale, served while refreshed in the background |
//! | `switchyard; hit; ttl=-3; detail=max-stale` | stale, within the request's `max-stale` |
//! | `switchyard; fwd=uri-miss; stored` | nothing stored for the URL; the response is being stored |
//! | `switchyard; fwd=uri-miss` | nothing stored; the response is not storable |
//! | `switchyard; fwd=vary-miss[; stored]` | stored for the URL, not for this request's `Vary` fields |
//! | `switchyard; fwd=partial[; stored]` | a partial response is stored, without what the request asks for |
//! | `switchyard; fwd=uri-miss; ttl=60; collapsed` | waited for a concurrent request and answered from its response |
//! | `switchyard; fwd=stale; fwd-status=304; ttl=60` | stale, revalidated: the stored body with refreshed headers |
//! | `switchyard; fwd=stale[; stored]` | stale, replaced by the origin's new response |
//! | `switchyard; fwd=request[; fwd-status=304; ttl=60][; stored]` | the request's directives (`no-cache`, `max-age`, `min-fresh`) sent it upstream |
//! | `switchyard; fwd=stale; fwd-status=503; ttl=-3; detail=stale-if-error` | the upstream answered 500/502/503/504; stale served (no `fwd-status` when it failed with an error) |
//! | `switchyard; fwd=method` | a method the cache does not answer (POST, PUT, …) |
//! | `switchyard; fwd=bypass` | a GET or HEAD the cache leaves alone (`Upgrade`) |
//! | `switchyard; detail=only-if-cached` | the `504` for `only-if-cached` |
//!
//! `stored` is said when the response head goes out: a body that turns out larger than
//! `max_object_size`, is cut short or has trailers is still not stored.
//!
//! # Service
//!
//! [`Cache`] is always ready: a hit must not wait for, or fail because of, the inner
//! service. A request that goes upstream readies a clone of the inner service in its
//! response future; hence `S: Clone`, which background refreshes need too. A revalidation
//! in the foreground reuses the client's request; a background refresh builds a new GET
//! (the URI, headers and extensions of the request that found the response stale) with
//! `B::default()` as its body, hence `B: Default` (true of `http_body_util::Empty`,
//! `Full`, `UnsyncBoxBody`, `BoxBody` and axum's `Body`). It needs a tokio runtime (with
//! time enabled: coalescing waits are bounded with `tokio::time`). Errors
//! are the inner service's, passed through; `stale-if-error` answers `Ok` from the cache
//! where the inner service failed. A hit's response future is ready at once and not
//! boxed; one that goes upstream is boxed (and `Send`).
//!
//! Memory is bounded by [`CacheConfig::max_size`] (100 MiB by default), counted as the
//! bytes of bodies, headers and keys: the default [`MemoryStore`] is a
//! [`quick_cache`](https://docs.rs/quick_cache) cache weighted in bytes. Another store
//! plugs in through [`Store`]. [`CacheHandle::stats`] counts hits, misses, stale answers,
//! revalidations, coalesced waits, stores, evictions and the memory used, from atomics.
//!
//! [`CacheConfig::ttl`]: crate::CacheConfig::ttl
//! [`CacheConfig::heuristic_max`]: crate::CacheConfig::heuristic_max
//! [`CacheConfig::targeted_fields`]: crate::CacheConfig::targeted_fields
//! [`CacheConfig::max_object_size`]: crate::CacheConfig::max_object_size
//! [`CacheConfig::stale_while_revalidate`]: crate::CacheConfig::stale_while_revalidate
//! [`CacheConfig::stale_if_error`]: crate::CacheConfig::stale_if_error
//! [`CacheConfig::coalesce_wait`]: crate::CacheConfig::coalesce_wait
//! [`CacheHandle`]: crate::CacheHandle
//! [`Cache`]: crate::Cache
//! [`CacheConfig::max_size`]: crate::CacheConfig::max_size
//! [`MemoryStore`]: crate::MemoryStore
//! [`Store`]: crate::Store
//! [`CacheHandle::stats`]: crate::CacheHandle::stats
