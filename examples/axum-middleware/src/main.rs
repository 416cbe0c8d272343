//! Serves the application: `axum-middleware 127.0.0.1:8080 http://127.0.0.1:3001 ...`.

use switchyard::{Backend, Proxy, ProxyConfig};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let listen = args.next().unwrap_or_else(|| "127.0.0.1:8080".into());
    let proxy = Proxy::new(ProxyConfig::default());
    for (i, url) in args.enumerate() {
        proxy.add_backend(Backend::new(format!("backend-{i}"), url.parse()?))?;
    }
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!("application on http://{listen}; /api forwarded to the backends");
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    example_axum_middleware::serve(listener, proxy, ctrl_c).await?;
    Ok(())
}
