//! The Telemetry CEL subset's parser and checker: arbitrary text compiled as the control
//! plane (at apply time) and the proxy (once per snapshot) compile it, then evaluated once
//! against a fixed request.
//!
//! Invariants: nothing panics or overflows the stack; compiling is deterministic (the same
//! text compiles or fails the same way, with the same message); an error names the
//! expression and a column inside it (or just past its end).
#![no_main]

use std::borrow::Cow;

use libfuzzer_sys::fuzz_target;
use skein_snapshot::cel::{Attr, Attributes, Program, Value};

struct Req;

impl Attributes for Req {
    fn get(&self, a: &Attr) -> Option<Value<'_>> {
        Some(match a {
            Attr::ResponseCode => Value::Int(503),
            Attr::RequestSize | Attr::ResponseSize => Value::Int(i64::MAX),
            Attr::ConnectionMtls => Value::Bool(true),
            Attr::RequestHeader(h) if h == "x-user" => Value::Str(Cow::Borrowed("alice")),
            Attr::RequestHeader(_) | Attr::ResponseHeader(_) => return None,
            Attr::DestinationPort | Attr::SourcePort | Attr::UpstreamPort => Value::Int(8080),
            Attr::ResponseGrpcStatus => Value::Int(0),
            _ => Value::Str(Cow::Borrowed("/api/posts")),
        })
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let first = Program::compile(text);
    let second = Program::compile(text);
    match (&first, &second) {
        (Ok(p), Ok(_)) => {
            let _ = p.matches(&Req);
            let _ = p.eval_string(&Req);
        }
        (Err(a), Err(b)) => {
            assert_eq!(a, b, "compiling is not deterministic");
            assert_eq!(a.expr, text);
            assert!(a.column >= 1 && a.column <= text.chars().count() + 1, "{a}");
        }
        _ => panic!("compiling {text:?} is not deterministic"),
    }
});
