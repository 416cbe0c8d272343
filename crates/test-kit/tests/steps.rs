//! Each step does what it says, in process and on loopback, on paused time.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Empty;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use switchyard_core::{ConnectError, ConnectErrorKind};
use switchyard_test::error::{Reset, Truncated};
use switchyard_test::{send, Fleet, Got, Script, ScriptedBackend, Step, REQUEST_ID};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn get(path: &str) -> Request<Empty<Bytes>> {
    Request::get(path).body(Empty::new()).unwrap()
}

/// Calls `backend` in process.
async fn call(backend: &ScriptedBackend) -> Result<Got, switchyard_test::BoxError> {
    send(backend.clone(), get("/")).await
}

fn statuses(gots: &[Got]) -> Vec<u16> {
    gots.iter().map(|g| g.status.as_u16()).collect()
}

mod in_process {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn counted_steps_answer_in_order_then_the_last_repeats() {
        let script = Script::new([
            Step::status(503).header("retry-after", "2").times(2),
            Step::status(500),
            Step::ok().body("fine"),
        ]);
        let b = ScriptedBackend::new("b", script);
        let mut gots = Vec::new();
        for _ in 0..5 {
            gots.push(call(&b).await.unwrap());
        }
        assert_eq!(statuses(&gots), [503, 503, 500, 200, 200]);
        assert_eq!(gots[0].headers["retry-after"], "2");
        assert!(!gots[2].headers.contains_key("retry-after"));
        assert_eq!(gots[4].text(), "fine");
        gots[4].assert_backend("b");
        b.assert_requests(5);
        // Nothing waited: every request came at once on the paused clock.
        b.assert_times(&[Duration::ZERO; 5]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_cycling_script_starts_over() {
        let b = ScriptedBackend::new("b", Script::new([Step::status(503), Step::ok()]).cycles());
        let mut gots = Vec::new();
        for _ in 0..5 {
            gots.push(call(&b).await.unwrap());
        }
        assert_eq!(statuses(&gots), [503, 200, 503, 200, 503]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_delay_holds_the_answer_on_the_tokio_clock() {
        let b = ScriptedBackend::new(
            "b",
            Script::new([Step::delay(ms(800)), Step::status(503).after(ms(50))]),
        );
        call(&b)
            .await
            .unwrap()
            .assert_status(200)
            .assert_within(ms(800));
        let got = call(&b).await.unwrap();
        got.assert_status(503);
        assert_eq!(got.elapsed, ms(50));
        b.assert_times(&[Duration::ZERO, ms(800)]);
    }

    #[tokio::test(start_paused = true)]
    async fn timed_steps_follow_the_clock() {
        let b = ScriptedBackend::new(
            "b",
            Script::new([
                Step::status(503).for_duration(ms(1_000)),
                Step::status(500).for_duration(ms(1_000)),
                Step::ok(),
            ]),
        );
        let mut seen = Vec::new();
        for at in [0, 500, 999, 1_000, 1_999, 2_000, 5_000] {
            tokio::time::sleep_until(b.journal().epoch() + ms(at)).await;
            seen.push(call(&b).await.unwrap().status.as_u16());
        }
        assert_eq!(seen, [503, 503, 503, 500, 500, 200, 200]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_body_sends_its_chunks_one_every_interval() {
        let b = ScriptedBackend::new("b", Step::slow_body("abc", 3, ms(100)));
        let got = call(&b).await.unwrap();
        got.assert_status(200);
        assert!(got.is_complete());
        assert_eq!(got.text(), "abcabcabc");
        assert_eq!(got.elapsed, ms(300));
    }

    #[tokio::test(start_paused = true)]
    async fn a_truncated_body_breaks_off_with_an_error() {
        let b = ScriptedBackend::new("b", Step::truncated_body(100, 10));
        let got = call(&b).await.unwrap();
        got.assert_status(200).assert_truncated();
        assert_eq!(got.headers["content-length"], "100");
        assert_eq!(got.body.len(), 10);
        assert!(got.body_error.unwrap().is::<Truncated>());
    }

    #[tokio::test(start_paused = true)]
    async fn a_reset_fails_the_call() {
        let b = ScriptedBackend::new("b", Script::new([Step::reset().after(ms(20)), Step::ok()]));
        let err = call(&b).await.unwrap_err();
        assert!(err.is::<Reset>(), "{err}");
        call(&b).await.unwrap().assert_status(200);
        b.assert_times(&[Duration::ZERO, ms(20)]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_refusal_fails_the_call_as_a_refused_connection() {
        let b = ScriptedBackend::new("b", Script::new([Step::refuse().times(2), Step::ok()]));
        for _ in 0..2 {
            let err = call(&b).await.unwrap_err();
            let connect = err.downcast_ref::<ConnectError>().expect("a connect error");
            assert_eq!(connect.kind(), ConnectErrorKind::Refused);
        }
        call(&b).await.unwrap().assert_status(200);
    }

    #[tokio::test(start_paused = true)]
    async fn a_hang_never_answers() {
        let b = ScriptedBackend::new("b", Step::hang());
        let waited = tokio::time::timeout(Duration::from_secs(3600), call(&b)).await;
        assert!(waited.is_err(), "answered");
        b.assert_requests(1);
    }

    #[tokio::test(start_paused = true)]
    async fn health_checks_have_a_script_of_their_own_and_do_not_count() {
        let b = ScriptedBackend::builder("b", Script::new([Step::status(503), Step::ok()]))
            .health(Script::new([Step::ok(), Step::status(500)]))
            .build();
        let health = |b: &ScriptedBackend| send(b.clone(), get("/health"));
        assert_eq!(health(&b).await.unwrap().status, StatusCode::OK);
        assert_eq!(health(&b).await.unwrap().status, 500);
        // The main script was not used up by the checks.
        call(&b).await.unwrap().assert_status(503);
        b.assert_requests(1);
        assert_eq!(b.health_checks().len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_fleet_shares_one_journal_and_numbers_attempts() {
        let fleet = Fleet::new([("a", Step::status(503)), ("b", Step::ok())]);
        for name in ["a", "b"] {
            let req = Request::get("/x")
                .header(REQUEST_ID, "r1")
                .body(Empty::<Bytes>::new())
                .unwrap();
            send(fleet[name].clone(), req).await.unwrap();
        }
        call(&fleet["b"]).await.unwrap();
        let attempts = fleet.journal().attempts("r1");
        let by: Vec<_> = attempts.iter().map(|s| (&*s.backend, s.attempt)).collect();
        assert_eq!(by, [("a", 1), ("b", 2)]);
        fleet.assert_counts(&[("a", 1), ("b", 2)]);
        assert!((fleet.share("b") - 2.0 / 3.0).abs() < 1e-9);
    }

    #[tokio::test(start_paused = true)]
    async fn the_journal_keeps_each_request_and_its_body_length() {
        let b = ScriptedBackend::new("b", Step::ok());
        let req = Request::post("/upload?x=1")
            .header("x-mine", "yes")
            .body("12345".to_owned())
            .unwrap();
        send(b.clone(), req).await.unwrap();
        let seen = &b.requests()[0];
        assert_eq!(seen.method, http::Method::POST);
        assert_eq!(seen.uri, "/upload?x=1");
        assert_eq!(seen.headers["x-mine"], "yes");
        assert_eq!(seen.body_len, Some(5));
        assert_eq!((seen.connection, seen.attempt), (None, 1));
    }
}

mod loopback {
    use super::*;

    fn client() -> Client<HttpConnector, Empty<Bytes>> {
        Client::builder(TokioExecutor::new()).build_http()
    }

    async fn fetch(
        b: &ScriptedBackend,
        path: &str,
    ) -> Result<Got, hyper_util::client::legacy::Error> {
        fetch_with(&client(), b, path).await
    }

    async fn fetch_with(
        client: &Client<HttpConnector, Empty<Bytes>>,
        b: &ScriptedBackend,
        path: &str,
    ) -> Result<Got, hyper_util::client::legacy::Error> {
        send(client.clone(), get(&format!("http://{}{path}", b.addr()))).await
    }

    #[tokio::test(start_paused = true)]
    async fn steps_answer_over_one_kept_alive_connection() {
        let script = Script::new([
            Step::status(503).header("retry-after", "2").times(2),
            Step::ok().body("fine"),
        ]);
        let b = ScriptedBackend::bind("b", script).await;
        let client = client();
        let mut gots = Vec::new();
        for _ in 0..3 {
            gots.push(fetch_with(&client, &b, "/x").await.unwrap());
        }
        assert_eq!(statuses(&gots), [503, 503, 200]);
        assert_eq!(gots[0].headers["retry-after"], "2");
        gots[2].assert_backend("b");
        assert_eq!(gots[2].text(), "fine");
        b.assert_requests(3);
        b.assert_connections(1);
        let conns: Vec<_> = b.requests().iter().map(|s| s.connection).collect();
        assert_eq!(conns, [Some(1); 3]);
        assert_eq!(b.requests()[0].uri, "/x");
    }

    #[tokio::test(start_paused = true)]
    async fn a_delay_and_a_slow_body_run_on_the_tokio_clock() {
        let script = Script::new([
            Step::delay(ms(800)),
            Step::slow_body("abc", 3, ms(100)).after(ms(50)),
        ]);
        let b = ScriptedBackend::bind("b", script).await;
        let got = fetch(&b, "/").await.unwrap();
        got.assert_status(200);
        assert_eq!(got.elapsed, ms(800));
        let got = fetch(&b, "/").await.unwrap();
        assert_eq!((got.text().as_str(), got.elapsed), ("abcabcabc", ms(350)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_truncated_body_closes_the_connection_mid_body() {
        let b = ScriptedBackend::bind("b", Step::truncated_body(1000, 10)).await;
        let got = fetch(&b, "/").await.unwrap();
        got.assert_status(200).assert_truncated();
        assert!(got.body.len() <= 10, "{got:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_reset_breaks_the_connection_without_an_answer() {
        let b = ScriptedBackend::bind("b", Script::new([Step::reset(), Step::ok()])).await;
        let err = fetch(&b, "/").await.unwrap_err();
        assert!(!err.is_connect(), "the connection was made: {err:?}");
        fetch(&b, "/").await.unwrap().assert_status(200);
        b.assert_requests(2);
        b.assert_connections(2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_refusing_step_closes_the_port_for_its_duration() {
        let script = Script::new([
            Step::ok().times(1),
            Step::refuse().for_duration(ms(1_000)),
            Step::ok(),
        ]);
        let b = ScriptedBackend::bind("b", script).await;
        let client = client();
        fetch_with(&client, &b, "/")
            .await
            .unwrap()
            .assert_status(200);
        // Refusing now: the kept-alive connection was reset, new ones are refused.
        tokio::time::sleep(ms(10)).await;
        let err = fetch(&b, "/").await.unwrap_err();
        assert!(err.is_connect(), "{err:?}");
        tokio::time::sleep(ms(1_000)).await;
        fetch(&b, "/").await.unwrap().assert_status(200);
        b.assert_requests(2);
        assert!(b.closed_connections() >= 1);
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_in_flight_when_refusing_starts_still_goes() {
        let script = Script::new([
            Step::delay(ms(500)),
            Step::refuse().for_duration(ms(1_000)),
            Step::ok(),
        ]);
        let b = ScriptedBackend::bind("b", script).await;
        let in_flight = tokio::spawn({
            let b = b.clone();
            async move { fetch(&b, "/").await }
        });
        tokio::time::sleep(ms(10)).await;
        let err = fetch(&b, "/").await.unwrap_err();
        assert!(err.is_connect(), "{err:?}");
        let got = in_flight.await.unwrap().unwrap();
        got.assert_status(200);
        assert_eq!(got.elapsed, ms(500));
        tokio::time::sleep(ms(1_000)).await;
        fetch(&b, "/").await.unwrap().assert_status(200);
    }

    #[tokio::test(start_paused = true)]
    async fn health_checks_on_loopback_are_kept_apart() {
        let b = ScriptedBackend::builder("b", Step::status(503))
            .health(Step::status(500))
            .bind()
            .await;
        fetch(&b, "/health").await.unwrap().assert_status(500);
        fetch(&b, "/").await.unwrap().assert_status(503);
        b.assert_requests(1);
        assert_eq!(b.health_checks().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_fleet_on_loopback_gives_each_backend_a_port() {
        let fleet = Fleet::bind([("a", Step::ok()), ("b", Step::ok())]).await;
        let urls = fleet.urls();
        assert_ne!(urls[0].1, urls[1].1);
        fetch(&fleet["a"], "/").await.unwrap().assert_backend("a");
        fetch(&fleet["b"], "/").await.unwrap().assert_backend("b");
        fleet.assert_counts(&[("a", 1), ("b", 1)]);
    }
}
