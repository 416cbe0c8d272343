//! What a backend answers: [`Step`]s, strung into a [`Script`].

use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, StatusCode};
use tokio::time::Instant;

/// One kind of answer, and how long a backend keeps giving it.
///
/// A step answers a request with a response ([`Step::ok`], [`Step::status`],
/// [`Step::slow_body`], [`Step::truncated_body`]), switches protocols and runs a
/// [`Tunnel`] ([`Step::upgrade`]), or fails ([`Step::reset`],
/// [`Step::refuse`], [`Step::hang`]), after an optional [`Step::after`] delay. It lasts for
/// one request unless told otherwise: [`Step::times`] counts requests,
/// [`Step::for_duration`] measures time on the tokio clock, [`Step::forever`] never ends.
///
/// ```
/// use std::time::Duration;
/// use switchyard_test::Step;
///
/// // Two 503s that ask for a retry in 2 s, then answers that take 800 ms for 5 s.
/// let steps = [
///     Step::status(503).header("retry-after", "2").times(2),
///     Step::ok().after(Duration::from_millis(800)).for_duration(Duration::from_secs(5)),
///     Step::reset(),
/// ];
/// # let _ = steps;
/// ```
#[derive(Debug, Clone)]
pub struct Step {
    pub(crate) answer: Answer,
    pub(crate) after: Duration,
    pub(crate) headers: HeaderMap,
    pub(crate) until: Until,
}

/// What a step does with a request.
#[derive(Debug, Clone)]
pub(crate) enum Answer {
    Respond { status: StatusCode, body: Plan },
    Upgrade(Tunnel),
    Reset,
    Refuse,
    Hang,
}

/// The body of a response.
#[derive(Debug, Clone)]
pub(crate) enum Plan {
    Full(Bytes),
    Slow {
        chunk: Bytes,
        count: usize,
        every: Duration,
    },
    Truncated {
        declared: usize,
        sent: usize,
    },
}

/// When a step is over.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Until {
    Times(u64),
    For(Duration),
    Forever,
}

impl Step {
    fn answer(answer: Answer) -> Self {
        Self {
            answer,
            after: Duration::ZERO,
            headers: HeaderMap::new(),
            until: Until::Times(1),
        }
    }

    /// Answers `200 OK` with an empty body.
    pub fn ok() -> Self {
        Self::status(200)
    }

    /// Answers with `status` and an empty body.
    ///
    /// # Panics
    ///
    /// If `status` is not a valid status code (100 to 999).
    pub fn status(status: u16) -> Self {
        let status = StatusCode::from_u16(status)
            .unwrap_or_else(|_| panic!("{status} is not an HTTP status code"));
        Self::answer(Answer::Respond {
            status,
            body: Plan::Full(Bytes::new()),
        })
    }

    /// Answers `200 OK` after `delay`: a slow backend. The same as
    /// `Step::ok().after(delay)`.
    pub fn delay(delay: Duration) -> Self {
        Self::ok().after(delay)
    }

    /// Answers `200 OK` with a body of `count` copies of `chunk`, one every `every` (the
    /// first after `every` too): a backend that streams slowly. The response head comes at
    /// once (after [`Step::after`]); the body is sent with chunked encoding.
    pub fn slow_body(chunk: impl Into<Bytes>, count: usize, every: Duration) -> Self {
        let mut step = Self::ok();
        step.answer = Answer::Respond {
            status: StatusCode::OK,
            body: Plan::Slow {
                chunk: chunk.into(),
                count,
                every,
            },
        };
        step
    }

    /// Answers `200 OK` with `Content-Length: declared` but only `sent` bytes (`x`s) of
    /// body, then breaks: on loopback the connection is closed mid-body; in process the
    /// body ends with a [`Truncated`](crate::error::Truncated) error.
    ///
    /// # Panics
    ///
    /// If `sent` is not less than `declared`.
    pub fn truncated_body(declared: usize, sent: usize) -> Self {
        assert!(
            sent < declared,
            "a truncated body sends less than it declares"
        );
        let mut step = Self::ok();
        step.answer = Answer::Respond {
            status: StatusCode::OK,
            body: Plan::Truncated { declared, sent },
        };
        step
    }

    /// Breaks the connection without an answer, once the request has been read: on
    /// loopback the socket is closed with a zero linger (the client sees a reset); in
    /// process the call fails with [`Reset`](crate::error::Reset).
    pub fn reset() -> Self {
        Self::answer(Answer::Reset)
    }

    /// Refuses connections, as a backend that is down: on loopback the listener is closed
    /// while the step lasts, then opened again on the same port; open connections close
    /// once their answer in flight (from an earlier step) has gone, and a request that
    /// meets the step on one is reset. In process the call fails with a
    /// [`ConnectError`](switchyard_core::ConnectError) of kind `Refused`.
    ///
    /// On loopback a refused connection is not a request, so a refusing step ends only
    /// with time: give it [`Step::for_duration`], or it refuses for good.
    pub fn refuse() -> Self {
        Self::answer(Answer::Refuse)
    }

    /// Never answers: the request waits until the client gives up.
    pub fn hang() -> Self {
        Self::answer(Answer::Hang)
    }

    /// Answers a request that asks for a protocol upgrade (`Connection: upgrade` and
    /// `Upgrade: <protocol>`, as a WebSocket handshake does) with `101 Switching
    /// Protocols` to that protocol, then runs `tunnel` on the connection: the bytes it
    /// sends and what it does with those it reads. A request that asks for no upgrade is
    /// answered `426 Upgrade Required`, as a WebSocket endpoint would.
    ///
    /// The tunnel runs on loopback only; in process the `101` is all there is (there is
    /// no connection to switch). The journal records the switch and the tunnel's bytes
    /// both ways ([`Seen::tunnel`](crate::Seen::tunnel)). The `101` carries only the
    /// headers given with [`Step::header`] besides `Connection` and `Upgrade`: a
    /// client that checks `Sec-WebSocket-Accept` needs it given.
    pub fn upgrade(tunnel: Tunnel) -> Self {
        Self::answer(Answer::Upgrade(tunnel))
    }

    /// Waits `delay` (on the tokio clock, after reading the request) before answering or
    /// failing.
    pub fn after(mut self, delay: Duration) -> Self {
        self.after = delay;
        self
    }

    /// The body of the response, for [`Step::ok`] and [`Step::status`] steps.
    ///
    /// # Panics
    ///
    /// If the step does not answer with a complete body.
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        match &mut self.answer {
            Answer::Respond {
                body: plan @ Plan::Full(_),
                ..
            } => *plan = Plan::Full(body.into()),
            other => panic!("a body for a step that answers {other:?}"),
        }
        self
    }

    /// Adds a response header.
    ///
    /// # Panics
    ///
    /// If `name` or `value` is not a valid header name or value.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        let name =
            HeaderName::try_from(name).unwrap_or_else(|_| panic!("{name:?} is not a header name"));
        let value = HeaderValue::try_from(value)
            .unwrap_or_else(|_| panic!("{value:?} is not a header value"));
        self.headers.append(name, value);
        self
    }

    /// Answers the next `n` requests this way (1 unless told).
    ///
    /// # Panics
    ///
    /// If `n` is 0.
    pub fn times(mut self, n: u64) -> Self {
        assert!(n > 0, "a step lasts for one request or more");
        self.until = Until::Times(n);
        self
    }

    /// Answers every request this way for `duration` on the tokio clock, from the moment
    /// the step starts: when the backend starts, for a first step; when the step before
    /// it ended, after a timed step; at the first request that reaches it, after a
    /// counted step.
    ///
    /// # Panics
    ///
    /// If `duration` is zero.
    pub fn for_duration(mut self, duration: Duration) -> Self {
        assert!(!duration.is_zero(), "a timed step lasts for some time");
        self.until = Until::For(duration);
        self
    }

    /// Answers every request this way from now on: the steps after it are never reached.
    pub fn forever(mut self) -> Self {
        self.until = Until::Forever;
        self
    }
}

/// What a loopback backend does on a connection it has switched to another protocol
/// with [`Step::upgrade`]: echo, say something and close, or hold silent; optionally
/// something to send first, and a number of bytes after which it closes.
///
/// ```
/// use switchyard_test::{Step, Tunnel};
///
/// // A chat server that greets, echoes, and hangs up after 1 KiB from the client.
/// let chat = Step::upgrade(Tunnel::echo().first("welcome\n").close_after(1024));
/// // A peer that has gone quiet: it reads, never answers, never closes.
/// let quiet = Step::upgrade(Tunnel::silent());
/// # let _ = (chat, quiet);
/// ```
#[derive(Debug, Clone)]
pub struct Tunnel {
    pub(crate) first: Bytes,
    pub(crate) mode: TunnelMode,
    pub(crate) close_after: Option<usize>,
}

/// What a tunnel does with the bytes it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TunnelMode {
    Echo,
    Silent,
    Close,
}

impl Tunnel {
    fn mode(mode: TunnelMode) -> Self {
        Self {
            first: Bytes::new(),
            mode,
            close_after: None,
        }
    }

    /// Sends back every byte it reads, until the client closes its side; then closes.
    pub fn echo() -> Self {
        Self::mode(TunnelMode::Echo)
    }

    /// Reads what comes and sends nothing, keeping the connection open until the client
    /// closes: a peer that has gone quiet (what an idle timeout is for).
    pub fn silent() -> Self {
        Self::mode(TunnelMode::Silent)
    }

    /// Sends `bytes`, then closes the connection.
    pub fn send(bytes: impl Into<Bytes>) -> Self {
        Self::mode(TunnelMode::Close).first(bytes)
    }

    /// Sends `bytes` as soon as the connection is switched, before anything else.
    pub fn first(mut self, bytes: impl Into<Bytes>) -> Self {
        self.first = bytes.into();
        self
    }

    /// Closes the connection once `n` bytes have come from the client (echoing those
    /// first, if it echoes; what comes after them is neither read nor echoed).
    pub fn close_after(mut self, n: usize) -> Self {
        self.close_after = Some(n);
        self
    }
}

/// A sequence of [`Step`]s. When the last step is over, it goes on answering (a backend
/// stays in the state the script left it in), unless the script [`Script::cycles`].
#[derive(Debug, Clone)]
pub struct Script {
    steps: Vec<Step>,
    cycles: bool,
}

impl Script {
    /// The steps, in order.
    ///
    /// # Panics
    ///
    /// If there are none.
    pub fn new(steps: impl IntoIterator<Item = Step>) -> Self {
        let steps: Vec<Step> = steps.into_iter().collect();
        assert!(!steps.is_empty(), "a script has at least one step");
        Self {
            steps,
            cycles: false,
        }
    }

    /// One step, forever: `Script::always(Step::ok())` is a healthy backend.
    pub fn always(step: Step) -> Self {
        Self::new([step.forever()])
    }

    /// Starts over at the first step when the last one is over.
    pub fn cycles(mut self) -> Self {
        self.cycles = true;
        self
    }
}

impl From<Step> for Script {
    /// The step, then the same again: `Step::ok().into()` answers 200 forever.
    fn from(step: Step) -> Self {
        Self::new([step])
    }
}

/// Where a backend is in its script.
#[derive(Debug)]
pub(crate) struct Cursor {
    script: Script,
    index: usize,
    /// Requests the current step has answered.
    used: u64,
    /// When the current step started, once it has.
    started: Option<Instant>,
    /// The last step is over and the script does not cycle: it answers from now on.
    done: bool,
}

impl Cursor {
    pub(crate) fn new(script: Script, now: Instant) -> Self {
        Self {
            script,
            index: 0,
            used: 0,
            started: Some(now),
            done: false,
        }
    }

    /// The current step at `now` (starting it if it had not started), and when it ends if
    /// it is timed.
    pub(crate) fn peek(&mut self, now: Instant) -> (&Step, Option<Instant>) {
        self.settle(now);
        let started = *self.started.get_or_insert(now);
        let step = &self.script.steps[self.index];
        let ends = match step.until {
            Until::For(d) if !self.done => Some(started + d),
            _ => None,
        };
        (step, ends)
    }

    /// The step that answers a request arriving at `now`, and when it ends if it is
    /// timed. On loopback (`loopback`) a refusing step is not used up by the requests
    /// that meet it: refused connections are not requests.
    pub(crate) fn take(&mut self, now: Instant, loopback: bool) -> (Step, Option<Instant>) {
        let (step, ends) = self.peek(now);
        let step = step.clone();
        if !(loopback && matches!(step.answer, Answer::Refuse)) {
            self.used += 1;
        }
        (step, ends)
    }

    /// Moves past the steps that are over at `now`.
    fn settle(&mut self, now: Instant) {
        // A cycle whose every step is over at once would loop for ever: bounded by one
        // pass per step, after which the current step answers.
        for _ in 0..=self.script.steps.len() * 2 {
            if self.done {
                return;
            }
            let step = &self.script.steps[self.index];
            let (over, ended) = match step.until {
                Until::Times(n) => (self.used >= n, None),
                Until::For(d) => {
                    let end = *self.started.get_or_insert(now) + d;
                    (now >= end, Some(end))
                }
                Until::Forever => (false, None),
            };
            if !over {
                return;
            }
            if self.index + 1 < self.script.steps.len() {
                self.index += 1;
            } else if self.script.cycles {
                self.index = 0;
            } else {
                self.done = true;
                return;
            }
            self.used = 0;
            // A step after a timed one starts when it ended; after a counted one, when a
            // request first reaches it.
            self.started = ended;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn statuses(cursor: &mut Cursor, at: Instant, n: usize) -> Vec<u16> {
        (0..n)
            .map(|_| match cursor.take(at, false).0.answer {
                Answer::Respond { status, .. } => status.as_u16(),
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn counted_steps_then_the_last_repeats() {
        let now = Instant::now();
        let mut c = Cursor::new(
            Script::new([Step::status(503).times(2), Step::status(500), Step::ok()]),
            now,
        );
        assert_eq!(statuses(&mut c, now, 6), [503, 503, 500, 200, 200, 200]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_cycle_starts_over() {
        let now = Instant::now();
        let mut c = Cursor::new(
            Script::new([Step::status(503), Step::ok().times(2)]).cycles(),
            now,
        );
        assert_eq!(statuses(&mut c, now, 6), [503, 200, 200, 503, 200, 200]);
    }

    #[tokio::test(start_paused = true)]
    async fn timed_steps_chain_on_the_clock() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let script = Script::new([
            Step::status(503).for_duration(s),
            Step::status(500).for_duration(s),
            Step::ok(),
        ]);
        let mut c = Cursor::new(script, t0);
        assert_eq!(statuses(&mut c, t0, 2), [503, 503]);
        // Nothing asked during the second step: it still ended on time.
        assert_eq!(statuses(&mut c, t0 + 2 * s, 2), [200, 200]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_timed_step_after_a_counted_one_starts_at_its_first_request() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let script = Script::new([
            Step::status(503),
            Step::status(500).for_duration(s),
            Step::ok(),
        ]);
        let mut c = Cursor::new(script, t0);
        assert_eq!(statuses(&mut c, t0, 1), [503]);
        assert_eq!(statuses(&mut c, t0 + 5 * s, 1), [500]);
        assert_eq!(statuses(&mut c, t0 + 5 * s + s / 2, 1), [500]);
        assert_eq!(statuses(&mut c, t0 + 6 * s, 1), [200]);
    }
}
