//! Ports and HTTP for tests: listener addresses no other test process takes, and a
//! blocking GET.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

/// A loopback address for a listener a test's process will bind.
///
/// Tests run in parallel processes, and "bind port 0, read it, close it" lets two of them
/// get the same port before either binds it. Ports are therefore taken from 20000-32767,
/// below the kernel's ephemeral range (so no `bind(0)` elsewhere lands on them), and each
/// is claimed with an exclusive lock on `/tmp/ward-test-ports/<port>.lock` that this
/// process holds until it exits.
pub fn free_addr() -> SocketAddr {
    use std::sync::Mutex;
    static CLAIMED: Mutex<Vec<std::fs::File>> = Mutex::new(Vec::new());
    let dir = std::env::temp_dir().join("ward-test-ports");
    std::fs::create_dir_all(&dir).expect("port lock dir");
    let mut seed = [0u8; 2];
    loop {
        let _ = aws_lc_rs::rand::fill(&mut seed);
        let port = 20_000 + u16::from_le_bytes(seed) % 12_768;
        let Ok(lock) = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(format!("{port}.lock")))
        else {
            continue;
        };
        if lock.try_lock().is_err() {
            continue;
        }
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        if TcpListener::bind(addr).is_ok() {
            CLAIMED.lock().unwrap_or_else(|p| p.into_inner()).push(lock);
            return addr;
        }
    }
}

/// A blocking `GET path` over HTTP/1.1; `None` if nothing answers.
pub fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    tcp.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        tcp,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = String::new();
    tcp.read_to_string(&mut raw).ok()?;
    let status = raw.split(' ').nth(1)?.parse().ok()?;
    let body = raw.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
    Some((status, body))
}
