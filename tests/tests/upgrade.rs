//! Binary upgrade: a second `switchyard serve --upgrade` takes the listening sockets over
//! from the running one, which stops accepting, drains and exits; clients see no failed
//! request and no reset connection.

use std::time::Duration;

use switchyard_tests::binary::{free_addr, write_config, Switchyard};
use switchyard_tests::{backend, raw_exchange};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_process_takes_the_sockets_over_under_load() {
    let origin = backend("a").await;
    let (listen, admin) = (free_addr(), free_addr());
    let socket = std::env::temp_dir().join(format!("switchyard-upgrade-{}.sock", listen.port()));
    let text = format!(
        "listen = \"{listen}\"\n\n[admin]\nlisten = \"{admin}\"\n\n[server]\n\
         shutdown_timeout = \"5s\"\n\n[proxy]\nhealth_check_enabled = false\n\n\
         [[backends]]\nid = \"a\"\nurl = \"{}\"\n",
        origin.url()
    );
    let config = write_config("upgrade.toml", &text);
    let args = ["--upgrade-socket", socket.to_str().unwrap()];
    let mut old = Switchyard::serve(&config, admin, &args).await;

    // Clients, each sending one request per connection, for 3 s.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    let clients: Vec<_> = (0..4)
        .map(|_| {
            tokio::spawn(async move {
                let (mut ok, mut failed) = (0, 0);
                while tokio::time::Instant::now() < deadline {
                    let request = b"GET / HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n";
                    let answered = tokio::spawn(raw_exchange(listen, request)).await;
                    match answered {
                        Ok((200, _)) => ok += 1,
                        _ => failed += 1,
                    }
                }
                (ok, failed)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut new = Switchyard::serve(&config, admin, &[&args[..], &["--upgrade"]].concat()).await;
    let exited = old.exited(Duration::from_secs(10)).await;
    let (mut ok, mut failed) = (0, 0);
    for client in clients {
        let (o, f) = client.await.unwrap();
        (ok, failed) = (ok + o, failed + f);
    }
    assert_eq!(exited, Some(Some(0)), "the old process drained and exited");
    assert!(ok > 50, "{ok} requests answered");
    assert_eq!(
        failed, 0,
        "{failed} requests failed or were reset ({ok} answered)"
    );
    assert!(new.logged("switchyard listening").await.is_some());
    // The new process serves alone now.
    assert_eq!(
        raw_exchange(listen, b"GET / HTTP/1.1\r\nhost: test\r\n\r\n")
            .await
            .0,
        200
    );
    let _ = std::fs::remove_file(socket);
}
