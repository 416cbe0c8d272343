//! Serves the application: `axum-middleware 127.0.0.1:8080 http://127.0.0.1:3001 ...`.

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (listen, proxy) = example_axum_gateway::from_args(std::env::args().skip(1))?;
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!("application on http://{listen}; /api forwarded to the backends");
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    example_axum_middleware::serve(listener, proxy, ctrl_c).await?;
    Ok(())
}
