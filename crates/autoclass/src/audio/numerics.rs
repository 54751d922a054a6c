//! numpy's float32 reductions, reproduced bit for bit, and Python's `json.dumps` for the
//! feature extractors' `repr`.

use serde_json::Value;

/// numpy's `pairwise_sum` for float32 (`PW_BLOCKSIZE` 128, 8-way unrolled blocks).
fn pairwise_sum(a: &[f32]) -> f32 {
    let n = a.len();
    if n < 8 {
        let mut res = 0f32;
        for &x in a {
            res += x;
        }
        res
    } else if n <= 128 {
        let mut r = [a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]];
        let full = n - n % 8;
        let mut i = 8;
        while i < full {
            for (j, acc) in r.iter_mut().enumerate() {
                *acc += a[i + j];
            }
            i += 8;
        }
        let mut res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for &x in &a[full..] {
            res += x;
        }
        res
    } else {
        let mut n2 = n / 2;
        n2 -= n2 % 8;
        pairwise_sum(&a[..n2]) + pairwise_sum(&a[n2..])
    }
}

/// `np.add.reduce` of a contiguous float32 vector: the identity 0 plus the pairwise sum.
pub(crate) fn sum_f32(a: &[f32]) -> f32 {
    0f32 + pairwise_sum(a)
}

/// `x.mean()` of a float32 vector: float32 sum, divided by the count in float64 and cast back
/// (numpy divides the float32 scalar by an `intp`). NaN for an empty vector, as numpy.
pub(crate) fn mean_f32(a: &[f32]) -> f32 {
    (f64::from(sum_f32(a)) / a.len() as f64) as f32
}

/// `x.var()` (population variance) of a float32 vector, as numpy computes it: the mean as in
/// [`mean_f32`], the squared deviations in float32, their pairwise sum divided as above.
pub(crate) fn var_f32(a: &[f32]) -> f32 {
    let mean = mean_f32(a);
    let squares: Vec<f32> = a
        .iter()
        .map(|&x| {
            let d = x - mean;
            d * d
        })
        .collect();
    (f64::from(sum_f32(&squares)) / a.len() as f64) as f32
}

/// transformers' `zero_mean_unit_var_norm` for one vector: statistics over `x[:length]`
/// (`length` = `None`: the whole vector), `(x - mean) / sqrt(var + 1e-7)` over the whole vector
/// in float32, then `y[length:] = padding_value`.
pub(crate) fn zero_mean_unit_var(x: &[f32], length: Option<usize>, padding_value: f32) -> Vec<f32> {
    let n = length.unwrap_or(x.len()).min(x.len());
    let head = &x[..n];
    let mean = mean_f32(head);
    let scale = (var_f32(head) + 1e-7f32).sqrt();
    let mut out: Vec<f32> = x.iter().map(|&v| (v - mean) / scale).collect();
    if n < out.len() {
        for v in &mut out[n..] {
            *v = padding_value;
        }
    }
    out
}

/// Python's `repr(float)`: the shortest round-trip digits, exponent notation when the decimal
/// exponent is below -4 or at least 16 (`1e-07`, `1e+16`), else fixed with at least one decimal.
pub(crate) fn python_float(x: f64) -> String {
    if x.is_nan() {
        return "NaN".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    let sci = format!("{x:e}");
    let (mantissa, exp) = match sci.split_once('e') {
        Some((m, e)) => (m, e.parse::<i32>().unwrap_or(0)),
        None => (sci.as_str(), 0),
    };
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    if !(-4..16).contains(&exp) {
        let mut m = digits[..1].to_string();
        if digits.len() > 1 {
            m.push('.');
            m.push_str(&digits[1..]);
        }
        let esign = if exp < 0 { '-' } else { '+' };
        return format!("{sign}{m}e{esign}{:02}", exp.abs());
    }
    let point = exp + 1; // digits before the decimal point
    let body = if point <= 0 {
        format!("0.{}{}", "0".repeat((-point) as usize), digits)
    } else if point as usize >= digits.len() {
        format!("{}{}.0", digits, "0".repeat(point as usize - digits.len()))
    } else {
        let (int, frac) = digits.split_at(point as usize);
        format!("{int}.{frac}")
    };
    format!("{sign}{body}")
}

fn python_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            ' '..='~' => out.push(c),
            other => {
                let mut units = [0u16; 2];
                for unit in other.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
        }
    }
    out.push('"');
}

fn python_json_into(value: &Value, indent: usize, out: &mut String) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) if !n.is_f64() => out.push_str(&i.to_string()),
            (_, Some(u), _) if !n.is_f64() => out.push_str(&u.to_string()),
            (_, _, Some(f)) => out.push_str(&python_float(f)),
            _ => out.push_str(&n.to_string()),
        },
        Value::String(s) => python_string(s, out),
        Value::Array(items) if items.is_empty() => out.push_str("[]"),
        Value::Array(items) => {
            out.push_str("[\n");
            for (i, item) in items.iter().enumerate() {
                out.push_str(&"  ".repeat(indent + 1));
                python_json_into(item, indent + 1, out);
                out.push_str(if i + 1 < items.len() { ",\n" } else { "\n" });
            }
            out.push_str(&"  ".repeat(indent));
            out.push(']');
        }
        Value::Object(map) if map.is_empty() => out.push_str("{}"),
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_unstable();
            out.push_str("{\n");
            for (i, key) in keys.iter().enumerate() {
                out.push_str(&"  ".repeat(indent + 1));
                python_string(key, out);
                out.push_str(": ");
                python_json_into(&map[key.as_str()], indent + 1, out);
                out.push_str(if i + 1 < keys.len() { ",\n" } else { "\n" });
            }
            out.push_str(&"  ".repeat(indent));
            out.push('}');
        }
    }
}

/// `json.dumps(value, indent=2, sort_keys=True)` (ASCII-escaped, Python float formatting).
pub(crate) fn python_json(value: &Value) -> String {
    let mut out = String::new();
    python_json_into(value, 0, &mut out);
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use serde_json::json;

    #[test]
    fn floats_print_like_python() {
        for (x, s) in [
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (0.5, "0.5"),
            (1e-7, "1e-07"),
            (1e-5, "1e-05"),
            (0.0001, "0.0001"),
            (16000.0, "16000.0"),
            (1e16, "1e+16"),
            (1.5e16, "1.5e+16"),
            (123456789012345.6, "123456789012345.6"),
            (0.1 + 0.2, "0.30000000000000004"),
            (-2.5e-10, "-2.5e-10"),
        ] {
            assert_eq!(python_float(x), s, "{x}");
        }
    }

    #[test]
    fn json_like_python() {
        let v = json!({"b": [1, 2.0], "a": {"z": null, "y": "é\n"}, "c": {}, "d": []});
        assert_eq!(
            python_json(&v),
            "{\n  \"a\": {\n    \"y\": \"\\u00e9\\n\",\n    \"z\": null\n  },\n  \"b\": [\n    1,\n    \
             2.0\n  ],\n  \"c\": {},\n  \"d\": []\n}"
        );
    }

    #[test]
    fn reductions() {
        let a: Vec<f32> = (0..1000).map(|i| (i as f32 * 0.37).sin()).collect();
        let s64: f64 = a.iter().map(|&x| f64::from(x)).sum();
        assert!((f64::from(sum_f32(&a)) - s64).abs() < 1e-4);
        assert!(mean_f32(&[]).is_nan());
        let y = zero_mean_unit_var(&[1.0, 2.0, 3.0, 0.0], Some(3), 0.5);
        assert_eq!(y[3], 0.5);
        assert!((y[0] + y[2]).abs() < 1e-6 && y[1].abs() < 1e-6);
    }
}
