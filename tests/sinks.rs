//! The alert sinks of the lab tests (tests/common/sinks.rs), over loopback: what they record and
//! answer, two requests on one kept-alive connection.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;

use common::sinks::{TelegramStandIn, Webhook};
use serde_json::{json, Value};

/// A client on one connection, as Go's keeps it open between requests.
struct Connection {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Connection {
    fn open(url: &str) -> Connection {
        let addr = url.trim_start_matches("http://").trim_end_matches('/');
        let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .expect("read timeout");
        let reader = BufReader::new(stream.try_clone().expect("clone the stream"));
        Connection { stream, reader }
    }

    /// POSTs `body` as JSON to `path`; returns the status and the answer's JSON, read by its
    /// Content-Length.
    fn post(&mut self, path: &str, body: &Value) -> (u16, Value) {
        let body = body.to_string();
        write!(
            self.stream,
            "POST {path} HTTP/1.1\r\nHost: sink\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .expect("send");
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("status line");
        let status = line
            .split_whitespace()
            .nth(1)
            .expect("a status")
            .parse()
            .expect("a number");
        let mut length = 0;
        loop {
            line.clear();
            self.reader.read_line(&mut line).expect("a header");
            match line.trim_end().split_once(':') {
                None => break,
                Some((name, value)) if name.eq_ignore_ascii_case("content-length") => {
                    length = value.trim().parse().expect("a length")
                }
                Some(_) => {}
            }
        }
        let mut answer = vec![0; length];
        self.reader.read_exact(&mut answer).expect("the body");
        (
            status,
            serde_json::from_slice(&answer).expect("a JSON answer"),
        )
    }
}

#[test]
fn the_webhook_records_each_body_of_a_kept_alive_connection_in_order() {
    let hook = Webhook::start("127.0.0.1:0".parse().unwrap());
    let mut conn = Connection::open(&hook.url());
    let firing =
        json!({"status": "firing", "alerts": [{"labels": {"alertname": "PatroniLeaderChanged"}}]});
    let resolved = json!({"status": "resolved", "alerts": []});

    assert_eq!(conn.post("/", &firing).0, 200);
    assert_eq!(conn.post("/", &resolved).0, 200);

    let got = hook.messages();
    let bodies: Vec<&Value> = got.iter().map(|(_, body)| body).collect();
    assert_eq!(bodies, [&firing, &resolved]);
    assert!(got[0].0 <= got[1].0);
}

#[test]
fn the_telegram_stand_in_answers_send_message_as_the_bot_api_and_refuses_another_token() {
    let bot = TelegramStandIn::start("127.0.0.1:0".parse().unwrap(), "123456:lab-token");
    let mut conn = Connection::open(&bot.url());
    // What Alertmanager's notifier (telebot) sends: every field a string.
    let send = json!({"chat_id": "-1001234567890", "text": "<b>[FIRING:1]</b>",
        "parse_mode": "HTML", "disable_web_page_preview": "true"});

    let (status, answer) = conn.post("/bot123456:lab-token/sendMessage", &send);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["ok"], true);
    assert_eq!(answer["result"]["message_id"], 1);
    assert_eq!(answer["result"]["chat"]["id"], -1001234567890_i64);
    let (status, answer) = conn.post("/botWRONG/sendMessage", &send);
    assert_eq!(status, 401);
    assert_eq!(
        answer,
        json!({"ok": false, "error_code": 401, "description": "Unauthorized"})
    );

    let got = bot.messages();
    assert_eq!(got.len(), 1, "{:?}", bot.rejected());
    assert_eq!(got[0].chat_id, -1001234567890);
    assert_eq!(got[0].text, "<b>[FIRING:1]</b>");
    assert_eq!(got[0].parse_mode.as_deref(), Some("HTML"));
    assert_eq!(bot.rejected(), ["POST /botWRONG/sendMessage -> 401"]);
}
