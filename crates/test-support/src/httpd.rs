//! A small HTTP/1.1 server on 127.0.0.1 for makesum's download tests and benchmark:
//! serves bodies by path with an optional latency per request, and misbehaves on
//! purpose (404, a body cut off, a body that stalls). Stopped and joined when dropped.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// What the server answers to one request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// 200 with this body.
    Body(Vec<u8>),
    /// 404 Not Found.
    NotFound,
    /// 200 announcing the whole body's length, then only `sent` bytes, then close.
    Truncated { body: Vec<u8>, sent: usize },
    /// 200 announcing the whole body's length, `sent` bytes, then nothing until the
    /// server stops.
    Stall { body: Vec<u8>, sent: usize },
}

#[derive(Default)]
struct Shared {
    /// Per path, the replies still to give; the last one repeats.
    routes: HashMap<String, Vec<Reply>>,
    hits: HashMap<String, usize>,
}

pub struct Server {
    addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Server {
    /// Starts a server answering each request after `latency`.
    pub fn start(latency: Duration) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Mutex::new(Shared::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let connections = Arc::new(Mutex::new(Vec::new()));
        let acceptor = {
            let (shared, stop, connections) = (shared.clone(), stop.clone(), connections.clone());
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let (shared, stop) = (shared.clone(), stop.clone());
                    let handle = std::thread::spawn(move || serve(stream, &shared, &stop, latency));
                    connections.lock().unwrap().push(handle);
                }
            })
        };
        Server { addr, shared, stop, acceptor: Some(acceptor), connections }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Sets what `path` answers: each reply once, in order, the last one from then on.
    pub fn route(&self, path: &str, replies: Vec<Reply>) {
        assert!(!replies.is_empty());
        self.shared.lock().unwrap().routes.insert(path.to_owned(), replies);
    }

    /// How many requests `path` received.
    pub fn hits(&self, path: &str) -> usize {
        self.shared.lock().unwrap().hits.get(path).copied().unwrap_or(0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the acceptor so it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
        for c in std::mem::take(&mut *self.connections.lock().unwrap()) {
            let _ = c.join();
        }
    }
}

fn serve(mut stream: TcpStream, shared: &Mutex<Shared>, stop: &AtomicBool, latency: Duration) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut head = Vec::new();
    let mut byte = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&byte[..n]),
        }
        if head.len() > 64 * 1024 {
            return;
        }
    }
    let head = String::from_utf8_lossy(&head);
    let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
    if !latency.is_zero() {
        std::thread::sleep(latency);
    }
    let reply = {
        let mut s = shared.lock().unwrap();
        *s.hits.entry(path.clone()).or_default() += 1;
        match s.routes.get_mut(&path) {
            Some(q) if q.len() > 1 => Some(q.remove(0)),
            Some(q) => q.first().cloned(),
            None => None,
        }
    };
    let header = |len: usize| {
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
        )
    };
    let _ = match reply.unwrap_or(Reply::NotFound) {
        Reply::Body(body) => stream.write_all(header(body.len()).as_bytes()).and_then(|_| stream.write_all(&body)),
        Reply::NotFound => {
            stream.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\nConnection: close\r\n\r\nnot found")
        }
        Reply::Truncated { body, sent } => {
            stream.write_all(header(body.len()).as_bytes()).and_then(|_| stream.write_all(&body[..sent]))
        }
        Reply::Stall { body, sent } => {
            let r = stream.write_all(header(body.len()).as_bytes()).and_then(|_| stream.write_all(&body[..sent]));
            let _ = stream.flush();
            while !stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(20));
            }
            r
        }
    };
    let _ = stream.flush();
    let _ = stream.shutdown(std::net::Shutdown::Both);
}
