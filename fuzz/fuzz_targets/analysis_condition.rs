//! Argo Rollouts' condition language (`successCondition`, `failureCondition`): arbitrary text
//! compiled as the manifests' checks compile it, then evaluated against the results a
//! Prometheus measurement can give (a scalar, an empty vector, a vector with NaN and
//! infinities, no result).
//!
//! Invariants: nothing panics or overflows the stack; compiling is deterministic; a syntax
//! error's column lies inside the text or just past its end; evaluating twice gives the same
//! answer.
#![no_main]

use libfuzzer_sys::fuzz_target;
use skein_api::analysis::expr::{ExprError, Program, Value};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let first = Program::compile(text);
    let second = Program::compile(text);
    // Compared as printed, so that a float in the tree compares by its text (a NaN, were one
    // ever there, is not equal to itself).
    assert_eq!(
        format!("{first:?}"),
        format!("{second:?}"),
        "compiling {text:?} is not deterministic"
    );
    match first {
        Ok(p) => {
            for result in [
                Value::Num(0.97),
                Value::numbers(&[]),
                Value::numbers(&[0.61, f64::NAN, f64::INFINITY, -0.0]),
                Value::numbers(&vec![1.0; 300]),
                Value::Nil,
            ] {
                let a = p.eval_bool(&result);
                let b = p.eval_bool(&result);
                assert_eq!(a, b, "evaluating {text:?} is not deterministic");
                if let Err(ExprError::Syntax { .. }) = a {
                    panic!("evaluating {text:?} gave a syntax error");
                }
            }
        }
        Err(ExprError::Syntax { column, .. }) => {
            assert!(column >= 1 && column <= text.chars().count() + 1, "{text:?}: {column}");
        }
        Err(ExprError::Eval(e)) => panic!("compiling gave an evaluation error: {e}"),
    }
});
