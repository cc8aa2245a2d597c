//! `tcp`: a connection to HOST:PORT is accepted.

use super::Ctx;

pub async fn run(ctx: &Ctx<'_>) -> Result<(), String> {
    tokio::net::TcpStream::connect(ctx.target)
        .await
        .map(drop)
        .map_err(|e| format!("connect: {e}"))
}
