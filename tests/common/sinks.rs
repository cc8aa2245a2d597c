//! Where the lab's Alertmanager sends alerts in the tests: a webhook and a stand-in for the
//! Telegram Bot API, each on an address the lab hosts reach (the lab bridge's) and a port the OS
//! chooses, served by threads until the test binary ends. Wait for what arrives with
//! `eventually` over `messages()`.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

/// A webhook receiver (`webhook_configs: [{url}]`): records every POST body (Alertmanager's
/// webhook JSON) and answers 200.
pub struct Webhook {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<(SystemTime, Value)>>>,
}

impl Webhook {
    /// Listens on `addr` (port 0: one the OS chooses).
    pub fn start(addr: SocketAddr) -> Webhook {
        let received: Arc<Mutex<Vec<(SystemTime, Value)>>> = Arc::default();
        let log = Arc::clone(&received);
        let addr = serve(addr, move |request| {
            if request.method != "POST" {
                return (405, json!({"error": "POST only"}));
            }
            match serde_json::from_slice(&request.body) {
                Ok(body) => {
                    lock(&log).push((request.at, body));
                    (200, json!({}))
                }
                Err(e) => (400, json!({"error": format!("the body is no JSON: {e}")})),
            }
        });
        Webhook { addr, received }
    }

    /// The receiver's `url`.
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// Every body received so far, in order, with when it arrived.
    pub fn messages(&self) -> Vec<(SystemTime, Value)> {
        lock(&self.received).clone()
    }
}

/// One message the Telegram stand-in accepted.
#[derive(Debug, Clone)]
pub struct TelegramMessage {
    pub at: SystemTime,
    pub chat_id: i64,
    pub text: String,
    /// Alertmanager sends `HTML` unless the receiver sets another `parse_mode`.
    pub parse_mode: Option<String>,
}

/// The Telegram Bot API's `sendMessage` for one bot token, as Alertmanager's telegram notifier
/// calls it (`telegram_configs: [{api_url, bot_token, chat_id}]`): a JSON object of strings
/// (`chat_id`, `text`, `parse_mode`, `disable_web_page_preview`) POSTed to
/// `<api_url>/bot<token>/sendMessage`. The answer carries the message with its chat: the notifier
/// reads `result.chat.id`. A wrong token is answered 401 and any other path 404, as Telegram
/// does.
pub struct TelegramStandIn {
    addr: SocketAddr,
    accepted: Arc<Mutex<Vec<TelegramMessage>>>,
    rejected: Arc<Mutex<Vec<String>>>,
}

impl TelegramStandIn {
    /// Listens on `ip`, for the bot `token`.
    pub fn start(addr: SocketAddr, token: &str) -> TelegramStandIn {
        let accepted: Arc<Mutex<Vec<TelegramMessage>>> = Arc::default();
        let rejected: Arc<Mutex<Vec<String>>> = Arc::default();
        let (messages, refused) = (Arc::clone(&accepted), Arc::clone(&rejected));
        let token = token.to_string();
        let next_id = AtomicI64::new(1);
        let addr = serve(addr, move |request| {
            // telebot joins api_url and `/bot...`: an api_url ending in / gives `//bot...`.
            let path = request.path.trim_start_matches('/');
            let (status, answer) = match path.strip_prefix("bot").and_then(|p| p.split_once('/')) {
                None => telegram_error(404, "Not Found"),
                Some((given, _)) if given != token => telegram_error(401, "Unauthorized"),
                Some((_, "sendMessage")) if request.method == "POST" => match message(request) {
                    Ok(message) => {
                        let id = next_id.fetch_add(1, Ordering::Relaxed);
                        let date = SystemTime::now()
                            .duration_since(UNIX_EPOCH)
                            .map_or(0, |d| d.as_secs());
                        let answer = json!({"ok": true, "result": {
                            "message_id": id,
                            "date": date,
                            "chat": {"id": message.chat_id, "type": "private"},
                            "text": message.text,
                        }});
                        lock(&messages).push(message);
                        (200, answer)
                    }
                    Err(why) => telegram_error(400, &format!("Bad Request: {why}")),
                },
                Some(_) => telegram_error(404, "Not Found"),
            };
            if status != 200 {
                lock(&refused).push(format!("{} {} -> {status}", request.method, request.path));
            }
            (status, answer)
        });
        TelegramStandIn {
            addr,
            accepted,
            rejected,
        }
    }

    /// The receiver's `api_url`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every message accepted so far, in order.
    pub fn messages(&self) -> Vec<TelegramMessage> {
        lock(&self.accepted).clone()
    }

    /// The requests refused so far (`METHOD PATH -> STATUS`), for assertion messages.
    pub fn rejected(&self) -> Vec<String> {
        lock(&self.rejected).clone()
    }
}

/// A `sendMessage` request's message: telebot sends `chat_id` as a string, the Bot API also
/// takes a number.
fn message(request: &Request) -> Result<TelegramMessage, String> {
    let body: Value =
        serde_json::from_slice(&request.body).map_err(|e| format!("the body is no JSON: {e}"))?;
    let chat_id = match &body["chat_id"] {
        Value::String(s) => s.parse().ok(),
        other => other.as_i64(),
    }
    .ok_or("chat not found")?;
    let text = body["text"]
        .as_str()
        .filter(|t| !t.is_empty())
        .ok_or("message text is empty")?;
    Ok(TelegramMessage {
        at: request.at,
        chat_id,
        text: text.to_string(),
        parse_mode: body["parse_mode"].as_str().map(str::to_string),
    })
}

fn telegram_error(code: u16, description: &str) -> (u16, Value) {
    (
        code,
        json!({"ok": false, "error_code": code, "description": description}),
    )
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One request, read whole.
struct Request {
    method: String,
    path: String,
    body: Vec<u8>,
    /// When its body had arrived.
    at: SystemTime,
    /// The client asked to close the connection after the answer.
    close: bool,
}

/// The largest body read: Alertmanager's are a few kB.
const MAX_BODY: usize = 16 << 20;

/// Serves `respond`'s (status, JSON body) to every request on `ip` and a port the OS chooses.
fn serve(
    addr: SocketAddr,
    respond: impl Fn(&Request) -> (u16, Value) + Send + Sync + 'static,
) -> SocketAddr {
    let listener = TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
    let addr = listener.local_addr().expect("local addr");
    let respond = Arc::new(respond);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let respond = Arc::clone(&respond);
            // A thread per connection: Alertmanager keeps its connections open between requests.
            std::thread::spawn(move || converse(&stream, &*respond));
        }
    });
    addr
}

/// Answers one connection's requests in turn until the client closes it or asks to.
fn converse(stream: &TcpStream, respond: &dyn Fn(&Request) -> (u16, Value)) {
    let mut reader = BufReader::new(stream);
    let mut writer = stream;
    loop {
        let (status, body, close) = match read_request(&mut reader) {
            None => return,
            Some(Ok(request)) => {
                let (status, body) = respond(&request);
                (status, body, request.close)
            }
            // What was not read of this request cannot be told from the next one.
            Some(Err((status, why))) => (status, json!({"error": why}), true),
        };
        let body = body.to_string();
        let head = format!(
            "HTTP/1.1 {status} {}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n{}\r\n",
            reason(status),
            body.len(),
            if close { "Connection: close\r\n" } else { "" }
        );
        let sent = writer
            .write_all(head.as_bytes())
            .and_then(|()| writer.write_all(body.as_bytes()));
        if close || sent.is_err() {
            return;
        }
    }
}

/// The next request of a connection: None when the connection ends (between requests or in
/// one), an error status for a request that cannot be served.
fn read_request(reader: &mut impl BufRead) -> Option<Result<Request, (u16, String)>> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut words = line.split_whitespace();
    let (Some(method), Some(path), Some(version)) = (words.next(), words.next(), words.next())
    else {
        return Some(Err((400, format!("not a request line: {line:?}"))));
    };
    let (method, path) = (method.to_string(), path.to_string());
    let mut close = version == "HTTP/1.0";
    let mut length = 0;
    loop {
        line.clear();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        let Some((name, value)) = header.split_once(':') else {
            return Some(Err((400, format!("not a header: {header:?}"))));
        };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => match value.parse() {
                Ok(n) if n <= MAX_BODY => length = n,
                Ok(n) => return Some(Err((413, format!("a body of {n} bytes")))),
                Err(_) => return Some(Err((400, format!("Content-Length: {value}")))),
            },
            // Go's client sends a body of known length (Alertmanager's) with Content-Length.
            "transfer-encoding" => {
                return Some(Err((
                    411,
                    format!("Transfer-Encoding: {value} (send Content-Length)"),
                )))
            }
            "connection" => {
                close = if value.eq_ignore_ascii_case("close") {
                    true
                } else {
                    close && !value.eq_ignore_ascii_case("keep-alive")
                }
            }
            _ => {}
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(Ok(Request {
        method,
        path,
        body,
        at: SystemTime::now(),
        close,
    }))
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        411 => "Length Required",
        413 => "Payload Too Large",
        _ => "",
    }
}
