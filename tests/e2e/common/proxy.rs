//! A fault-injecting HTTP proxy in front of a local AWS-compatible server: tests point a
//! connector at it and decide, per request, to forward it, answer with an error (throttling),
//! or forward a changed request and rewrite the answer (partial failures).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What to do with one request.
pub enum Action {
    /// Pass it through unchanged.
    Forward,
    /// Answer without forwarding.
    Reply { status: u16, body: String },
    /// Close the connection without an answer, as a server that went away does.
    Drop,
    /// Forward `body` instead of the request's, and pass the answer's body through `response`.
    Rewrite {
        body: Vec<u8>,
        response: Box<dyn FnOnce(Vec<u8>) -> Vec<u8> + Send>,
    },
}

/// Decides per request, from the `X-Amz-Target` header (e.g. `Kinesis_20131202.GetRecords`)
/// and the body.
pub type Rule = Arc<dyn Fn(&str, &[u8]) -> Action + Send + Sync>;

/// A running proxy; stops when dropped.
pub struct FaultProxy {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// Requests answered by the rule instead of the server.
    pub injected: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FaultProxy {
    /// Starts a proxy to `upstream` (`http://host:port`) on a free local port.
    pub async fn start(upstream: &str, rule: Rule) -> FaultProxy {
        Self::launch(upstream, rule, None).await
    }

    /// A proxy that forwards one request at a time. The local S3 server checks
    /// `If-None-Match` and writes the object in two steps, so two writers racing for the same
    /// Delta log version can both succeed; one at a time, it behaves like S3, where the check
    /// and the write are atomic.
    pub async fn serializing(upstream: &str) -> FaultProxy {
        let rule: Rule = Arc::new(|_, _| Action::Forward);
        Self::launch(upstream, rule, Some(Arc::new(tokio::sync::Mutex::new(())))).await
    }

    async fn launch(
        upstream: &str,
        rule: Rule,
        one_at_a_time: Option<Arc<tokio::sync::Mutex<()>>>,
    ) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let upstream = upstream.trim_start_matches("http://").to_string();
        let injected = Arc::new(AtomicU64::new(0));
        let counter = injected.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let (upstream, rule, counter) = (upstream.clone(), rule.clone(), counter.clone());
                let one_at_a_time = one_at_a_time.clone();
                tokio::spawn(async move {
                    let _ = serve(client, &upstream, rule, counter, one_at_a_time).await;
                });
            }
        });
        FaultProxy {
            endpoint,
            injected,
            task,
        }
    }
}

/// An HTTP/1.1 request or response: the start line and headers, and the body.
pub struct Message {
    pub head: Vec<String>,
    pub body: Vec<u8>,
}

/// The value of header `name` (case-insensitive).
pub fn header<'a>(head: &'a [String], name: &str) -> Option<&'a str> {
    head.iter().skip(1).find_map(|line| {
        let (k, v) = line.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Reads one HTTP/1.1 message (head and body) from `stream`; `None` at a clean end.
pub async fn read_message(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    until_eof: bool,
) -> std::io::Result<Option<Message>> {
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let mut chunk = [0u8; 8192];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head: Vec<String> = String::from_utf8_lossy(&buf[..head_end])
        .split("\r\n")
        .map(str::to_string)
        .collect();
    buf.drain(..head_end + 4);
    let chunked = header(&head, "transfer-encoding").is_some_and(|v| v.contains("chunked"));
    let body = if let Some(len) = header(&head, "content-length") {
        let len: usize = len.parse().unwrap_or(0);
        while buf.len() < len {
            let mut chunk = [0u8; 8192];
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        buf.drain(..len.min(buf.len())).collect()
    } else if chunked || until_eof {
        stream.read_to_end(buf).await?;
        let raw = std::mem::take(buf);
        if chunked { dechunk(&raw) } else { raw }
    } else {
        Vec::new()
    };
    Ok(Some(Message { head, body }))
}

fn dechunk(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = raw;
    while let Some(i) = rest.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(
            String::from_utf8_lossy(&rest[..i])
                .split(';')
                .next()
                .unwrap()
                .trim(),
            16,
        )
        .unwrap_or(0);
        rest = &rest[i + 2..];
        if size == 0 || rest.len() < size {
            break;
        }
        out.extend_from_slice(&rest[..size]);
        rest = &rest[(size + 2).min(rest.len())..];
    }
    out
}

/// Writes a message with a fresh content-length (and `extra` header lines).
pub fn render(head: &[String], body: &[u8], extra: &[&str]) -> Vec<u8> {
    let mut out = String::new();
    out.push_str(&head[0]);
    out.push_str("\r\n");
    for line in &head[1..] {
        let name = line
            .split(':')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        // The body may have been rewritten, so its checksum (DynamoDB sends one) is dropped too.
        if [
            "content-length",
            "transfer-encoding",
            "connection",
            "x-amz-crc32",
        ]
        .contains(&name.as_str())
        {
            continue;
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    for line in extra {
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str(&format!("content-length: {}\r\n\r\n", body.len()));
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

async fn forward(upstream: &str, request: &Message, body: &[u8]) -> std::io::Result<Message> {
    let mut server = TcpStream::connect(upstream).await?;
    server
        .write_all(&render(&request.head, body, &["connection: close"]))
        .await?;
    let mut buf = Vec::new();
    read_message(&mut server, &mut buf, true)
        .await?
        .ok_or_else(|| std::io::Error::other("the server closed the connection"))
}

async fn serve(
    mut client: TcpStream,
    upstream: &str,
    rule: Rule,
    injected: Arc<AtomicU64>,
    one_at_a_time: Option<Arc<tokio::sync::Mutex<()>>>,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    while let Some(request) = read_message(&mut client, &mut buf, false).await? {
        let target = header(&request.head, "x-amz-target")
            .unwrap_or("")
            .to_string();
        let reply = match rule(&target, &request.body) {
            Action::Forward => {
                let _turn = match &one_at_a_time {
                    Some(lock) => Some(lock.lock().await),
                    None => None,
                };
                let response = forward(upstream, &request, &request.body).await?;
                render(&response.head, &response.body, &[])
            }
            Action::Reply { status, body } => {
                injected.fetch_add(1, Ordering::Relaxed);
                let head = vec![
                    format!("HTTP/1.1 {status} Injected"),
                    "content-type: application/x-amz-json-1.1".to_string(),
                ];
                render(&head, body.as_bytes(), &[])
            }
            Action::Drop => {
                injected.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
            Action::Rewrite { body, response } => {
                injected.fetch_add(1, Ordering::Relaxed);
                let answer = forward(upstream, &request, &body).await?;
                let rewritten = response(answer.body);
                render(&answer.head, &rewritten, &[])
            }
        };
        client.write_all(&reply).await?;
    }
    Ok(())
}
