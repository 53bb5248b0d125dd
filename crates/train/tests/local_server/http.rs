//! A tiny HTTP/1.1 server on 127.0.0.1 for the downloader tests: no crate,
//! one thread, scripted replies, a request counter.
//!
//! Bounded: it serves at most [`MAX_CONNECTIONS`] connections, each with a
//! read timeout, and stops when dropped (even when the test panics), so a
//! broken test cannot hang the suite.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

pub const MAX_CONNECTIONS: usize = 64;

/// What the server answers on one path.
#[derive(Clone, Debug)]
pub enum Reply {
    /// 200 with the body and its Content-Length.
    Ok(Vec<u8>),
    /// This status and a short text body.
    Status(u16),
    /// 200 announcing `declared` bytes, then only `body`, then closing.
    Cut { body: Vec<u8>, declared: usize },
    /// 200 with no Content-Length: the body ends when the connection closes.
    NoLength(Vec<u8>),
}

pub struct Server {
    addr: SocketAddr,
    requests: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        404 => "Not Found",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

fn serve(mut stream: TcpStream, routes: &HashMap<String, Reply>, requests: &AtomicUsize) {
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return; // the wake-up connection of Drop, or a client that gave up
    }
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    // Skip the headers.
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
            break;
        }
    }
    requests.fetch_add(1, Ordering::SeqCst);
    let head = |status: u16, len: Option<usize>| {
        let mut h = format!(
            "HTTP/1.1 {status} {}\r\nConnection: close\r\n",
            reason(status)
        );
        if let Some(n) = len {
            h += &format!("Content-Length: {n}\r\n");
        }
        h + "\r\n"
    };
    let reply = routes.get(&path).cloned().unwrap_or(Reply::Status(404));
    let _ = match reply {
        Reply::Ok(body) => stream
            .write_all(head(200, Some(body.len())).as_bytes())
            .and_then(|_| stream.write_all(&body)),
        Reply::Status(s) => {
            let body = format!("status {s}\n");
            stream
                .write_all(head(s, Some(body.len())).as_bytes())
                .and_then(|_| stream.write_all(body.as_bytes()))
        }
        Reply::Cut { body, declared } => stream
            .write_all(head(200, Some(declared)).as_bytes())
            .and_then(|_| stream.write_all(&body)),
        Reply::NoLength(body) => stream
            .write_all(head(200, None).as_bytes())
            .and_then(|_| stream.write_all(&body)),
    };
    let _ = stream.flush();
    let _ = stream.shutdown(Shutdown::Both);
}

impl Server {
    /// Starts serving `routes` (path -> reply; other paths get 404).
    pub fn start(routes: Vec<(&str, Reply)>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let routes: HashMap<String, Reply> = routes
            .into_iter()
            .map(|(p, r)| (p.to_string(), r))
            .collect();
        let requests = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (req, stp) = (requests.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming().take(MAX_CONNECTIONS) {
                if stp.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(s) = stream {
                    serve(s, &routes, &req);
                }
            }
        });
        Server {
            addr,
            requests,
            stop,
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Requests answered so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept call; fails harmlessly if the thread already ended.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A URL on which nothing listens: a port bound then released.
pub fn refused_url(path: &str) -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    format!("http://{addr}{path}")
}
