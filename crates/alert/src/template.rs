//! Annotation and label templates: the part of Prometheus's Go-template language that alert
//! rules use — `{{ $labels.device }}`, `{{ $value }}`, `{{ .Labels.x }}`, `{{ .Value }}`,
//! `{{ index $labels "x" }}`, pipes into `humanize`, `humanize1024`, `humanizePercentage`,
//! `humanizeDuration`, `printf "%.1f"`, `toUpper`, `toLower`, and `{{-`/`-}}` trimming.
//!
//! Templates are parsed when the rule file loads, so a typo is a load error with the file
//! and line, not a broken notification at 3 a.m.

use crate::labels::LabelSet;

/// A template that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("template `{template}`: {reason}")]
pub struct TemplateError {
    pub template: String,
    pub reason: String,
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(String),
    Action(Vec<Command>),
}

/// One command of a pipeline: a function with arguments, or a lone operand.
#[derive(Debug, Clone, PartialEq)]
enum Command {
    Operand(Operand),
    Call(Func, Vec<Operand>),
}

#[derive(Debug, Clone, PartialEq)]
enum Operand {
    Label(String),
    Labels,
    Value,
    Str(String),
    Num(f64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Func {
    Humanize,
    Humanize1024,
    HumanizePercentage,
    HumanizeDuration,
    Printf,
    Index,
    ToUpper,
    ToLower,
}

impl Func {
    fn from_name(name: &str) -> Option<Func> {
        Some(match name {
            "humanize" => Func::Humanize,
            "humanize1024" => Func::Humanize1024,
            "humanizePercentage" => Func::HumanizePercentage,
            "humanizeDuration" => Func::HumanizeDuration,
            "printf" => Func::Printf,
            "index" => Func::Index,
            "toUpper" => Func::ToUpper,
            "toLower" => Func::ToLower,
            _ => return None,
        })
    }
}

/// A value while a pipeline runs.
#[derive(Debug, Clone)]
enum Val {
    Str(String),
    Num(f64),
    Map(LabelSet),
}

impl Val {
    fn text(&self) -> String {
        match self {
            Val::Str(s) => s.clone(),
            Val::Num(v) => go_float(*v),
            Val::Map(m) => {
                let inner: Vec<String> = m.iter().map(|(k, v)| format!("{k}:{v}")).collect();
                format!("map[{}]", inner.join(" "))
            }
        }
    }

    fn num(&self) -> Option<f64> {
        match self {
            Val::Num(v) => Some(*v),
            Val::Str(s) => s.trim().parse().ok(),
            Val::Map(_) => None,
        }
    }
}

impl Template {
    /// Parses `text`.
    pub fn parse(text: &str) -> Result<Template, TemplateError> {
        let err = |reason: String| TemplateError {
            template: text.to_owned(),
            reason,
        };
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find("{{") {
            let mut before = &rest[..open];
            let mut inner_start = open + 2;
            if rest[inner_start..].starts_with('-') {
                before = before.trim_end();
                inner_start += 1;
            }
            let close = rest[inner_start..]
                .find("}}")
                .ok_or_else(|| err("unclosed action: `{{` without `}}`".into()))?
                + inner_start;
            let mut inner = &rest[inner_start..close];
            let trim_after = inner.ends_with('-') && inner.len() > 1;
            if trim_after {
                inner = &inner[..inner.len() - 1];
            }
            if !before.is_empty() {
                parts.push(Part::Text(before.to_owned()));
            }
            parts.push(Part::Action(parse_pipeline(inner.trim()).map_err(err)?));
            rest = &rest[close + 2..];
            if trim_after {
                rest = rest.trim_start();
            }
        }
        if rest.contains("}}") {
            return Err(err("`}}` without `{{`".into()));
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        Ok(Template { parts })
    }

    /// A template that expands to `text` as is.
    pub fn literal(text: &str) -> Template {
        Template {
            parts: vec![Part::Text(text.to_owned())],
        }
    }

    /// Whether the template is plain text (no actions).
    pub fn is_static(&self) -> bool {
        self.parts.iter().all(|p| matches!(p, Part::Text(_)))
    }

    /// Expands with an alert's labels and value. Runtime problems (a non-number given to
    /// `humanize`) expand to an `<error ...>` marker instead of failing the alert.
    pub fn expand(&self, labels: &LabelSet, value: f64) -> String {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Action(cmds) => match run(cmds, labels, value) {
                    Ok(v) => out.push_str(&v.text()),
                    Err(e) => out.push_str(&format!("<error expanding template: {e}>")),
                },
            }
        }
        out
    }
}

/// Parses and expands in one go (for callers without a cached template).
pub fn expand(text: &str, labels: &LabelSet, value: f64) -> Result<String, TemplateError> {
    Ok(Template::parse(text)?.expand(labels, value))
}

fn parse_pipeline(s: &str) -> Result<Vec<Command>, String> {
    if s.is_empty() {
        return Err("empty action `{{ }}`".into());
    }
    if s.starts_with("/*") {
        return Err("comments are not supported".into());
    }
    let tokens = tokenize(s)?;
    let mut cmds = Vec::new();
    for (i, group) in tokens.split(|t| t == &Token::Pipe).enumerate() {
        let Some((head, args)) = group.split_first() else {
            return Err("empty command in pipeline".into());
        };
        let cmd = match head {
            Token::Word(w) => {
                let func = Func::from_name(w).ok_or_else(|| {
                    format!(
                        "unknown function `{w}` (supported: humanize, humanize1024, \
                         humanizePercentage, humanizeDuration, printf, index, toUpper, toLower)"
                    )
                })?;
                let args = args.iter().map(operand).collect::<Result<Vec<_>, _>>()?;
                check_arity(func, args.len() + usize::from(i > 0))?;
                Command::Call(func, args)
            }
            other => {
                if i > 0 {
                    return Err("only a function can follow `|`".into());
                }
                if !args.is_empty() {
                    return Err("unexpected words after an operand".into());
                }
                Command::Operand(operand(other)?)
            }
        };
        cmds.push(cmd);
    }
    Ok(cmds)
}

fn check_arity(func: Func, n: usize) -> Result<(), String> {
    let ok = match func {
        Func::Printf => n >= 1,
        Func::Index => n == 2,
        _ => n == 1,
    };
    if ok {
        Ok(())
    } else {
        Err(format!("wrong number of arguments for {func:?}"))
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Pipe,
    Word(String),
    Var(String),
    Field(String),
    Str(String),
    Num(f64),
}

fn tokenize(s: &str) -> Result<Vec<Token>, String> {
    let mut out = Vec::new();
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '|' {
            out.push(Token::Pipe);
            i += 1;
        } else if c == '"' || c == '`' {
            let mut j = i + 1;
            let mut lit = String::new();
            while j < chars.len() && chars[j] != c {
                if c == '"' && chars[j] == '\\' && j + 1 < chars.len() {
                    j += 1;
                    lit.push(match chars[j] {
                        'n' => '\n',
                        't' => '\t',
                        other => other,
                    });
                } else {
                    lit.push(chars[j]);
                }
                j += 1;
            }
            if j >= chars.len() {
                return Err("unterminated string".into());
            }
            out.push(Token::Str(lit));
            i = j + 1;
        } else {
            let start = i;
            while i < chars.len() && !chars[i].is_whitespace() && chars[i] != '|' {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            out.push(if let Some(v) = word.strip_prefix('$') {
                Token::Var(v.to_owned())
            } else if let Some(f) = word.strip_prefix('.') {
                Token::Field(f.to_owned())
            } else if let Ok(n) = word.parse::<f64>() {
                Token::Num(n)
            } else {
                Token::Word(word)
            });
        }
    }
    Ok(out)
}

fn operand(t: &Token) -> Result<Operand, String> {
    let label_path = |rest: &str, whole: &str| -> Result<Operand, String> {
        if rest.is_empty() {
            return Ok(Operand::Labels);
        }
        match rest.strip_prefix('.') {
            Some(name) if crate::labels::valid_label_name(name) => {
                Ok(Operand::Label(name.to_owned()))
            }
            _ => Err(format!("bad label reference `{whole}`")),
        }
    };
    match t {
        Token::Var(v) => {
            if v == "value" {
                Ok(Operand::Value)
            } else if let Some(rest) = v.strip_prefix("labels") {
                label_path(rest, &format!("${v}"))
            } else {
                Err(format!(
                    "unknown variable `${v}` (use $labels, $labels.NAME or $value)"
                ))
            }
        }
        Token::Field(f) => {
            if f == "Value" {
                Ok(Operand::Value)
            } else if let Some(rest) = f.strip_prefix("Labels") {
                label_path(rest, &format!(".{f}"))
            } else {
                Err(format!(
                    "unknown field `.{f}` (use .Labels, .Labels.NAME or .Value)"
                ))
            }
        }
        Token::Str(s) => Ok(Operand::Str(s.clone())),
        Token::Num(n) => Ok(Operand::Num(*n)),
        Token::Word(w) => Err(format!("unexpected `{w}`")),
        Token::Pipe => Err("unexpected `|`".into()),
    }
}

fn eval_operand(o: &Operand, labels: &LabelSet, value: f64) -> Val {
    match o {
        Operand::Label(name) => Val::Str(labels.get(name).cloned().unwrap_or_default()),
        Operand::Labels => Val::Map(labels.clone()),
        Operand::Value => Val::Num(value),
        Operand::Str(s) => Val::Str(s.clone()),
        Operand::Num(n) => Val::Num(*n),
    }
}

fn run(cmds: &[Command], labels: &LabelSet, value: f64) -> Result<Val, String> {
    let mut piped: Option<Val> = None;
    for cmd in cmds {
        let v = match cmd {
            Command::Operand(o) => eval_operand(o, labels, value),
            Command::Call(func, args) => {
                let mut vals: Vec<Val> = args
                    .iter()
                    .map(|a| eval_operand(a, labels, value))
                    .collect();
                if let Some(p) = piped.take() {
                    vals.push(p);
                }
                call(*func, &vals)?
            }
        };
        piped = Some(v);
    }
    piped.ok_or_else(|| "empty pipeline".to_owned())
}

fn call(func: Func, args: &[Val]) -> Result<Val, String> {
    let num = |i: usize| -> Result<f64, String> {
        args.get(i)
            .and_then(Val::num)
            .ok_or_else(|| format!("{func:?} needs a number"))
    };
    Ok(match func {
        Func::Humanize => Val::Str(humanize(num(0)?)),
        Func::Humanize1024 => Val::Str(humanize1024(num(0)?)),
        Func::HumanizePercentage => Val::Str(format!("{}%", fmt_g(num(0)? * 100.0, 4))),
        Func::HumanizeDuration => Val::Str(humanize_duration(num(0)?)),
        Func::ToUpper => Val::Str(
            args.first()
                .map(Val::text)
                .unwrap_or_default()
                .to_uppercase(),
        ),
        Func::ToLower => Val::Str(
            args.first()
                .map(Val::text)
                .unwrap_or_default()
                .to_lowercase(),
        ),
        Func::Index => match (args.first(), args.get(1)) {
            (Some(Val::Map(m)), Some(k)) => Val::Str(m.get(&k.text()).cloned().unwrap_or_default()),
            _ => return Err("index needs a label map and a key".into()),
        },
        Func::Printf => {
            let Some(Val::Str(format)) = args.first() else {
                return Err("printf needs a format string first".into());
            };
            Val::Str(printf(format, &args[1..])?)
        }
    })
}

/// Go's `%v` for a float64: shortest representation, exponent form for large and tiny values.
fn go_float(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        };
    }
    let abs = v.abs();
    if abs != 0.0 && !(1e-4..1e21).contains(&abs) {
        let s = format!("{v:e}");
        // Rust prints `1e21`, Go `1e+21`.
        return match s.split_once('e') {
            Some((m, e)) if !e.starts_with('-') => format!("{m}e+{e:0>2}"),
            Some((m, e)) => format!("{m}e-{:0>2}", &e[1..]),
            None => s,
        };
    }
    format!("{v}")
}

/// Go's `%.{prec}g`: `prec` significant digits, trailing zeros dropped, exponent form when
/// the exponent is below -4 or at least `prec`.
pub(crate) fn fmt_g(v: f64, prec: usize) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        };
    }
    if v == 0.0 {
        return "0".into();
    }
    let p = prec.max(1);
    let e = format!("{:.*e}", p - 1, v);
    let (mant, exp) = e.split_once('e').unwrap_or((&e, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if exp < -4 || exp >= p as i32 {
        let mant = trim_zeros(mant);
        let sign = if exp < 0 { '-' } else { '+' };
        return format!("{mant}e{sign}{:02}", exp.abs());
    }
    let decimals = (p as i32 - 1 - exp).max(0) as usize;
    trim_zeros(&format!("{v:.decimals$}")).to_owned()
}

fn trim_zeros(s: &str) -> &str {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    }
}

fn humanize(v: f64) -> String {
    if v == 0.0 || v.is_nan() || v.is_infinite() {
        return fmt_g(v, 4);
    }
    if v.abs() >= 1.0 {
        let mut x = v;
        let mut prefix = "";
        for p in ["k", "M", "G", "T", "P", "E", "Z", "Y"] {
            if x.abs() < 1000.0 {
                break;
            }
            prefix = p;
            x /= 1000.0;
        }
        format!("{}{prefix}", fmt_g(x, 4))
    } else {
        let mut x = v;
        let mut prefix = "";
        for p in ["m", "u", "n", "p", "f", "a", "z", "y"] {
            if x.abs() >= 1.0 {
                break;
            }
            prefix = p;
            x *= 1000.0;
        }
        format!("{}{prefix}", fmt_g(x, 4))
    }
}

fn humanize1024(v: f64) -> String {
    if v.abs() <= 1.0 || v.is_nan() || v.is_infinite() {
        return fmt_g(v, 4);
    }
    let mut x = v;
    let mut prefix = "";
    for p in ["ki", "Mi", "Gi", "Ti", "Pi", "Ei", "Zi", "Yi"] {
        if x.abs() < 1024.0 {
            break;
        }
        prefix = p;
        x /= 1024.0;
    }
    format!("{}{prefix}", fmt_g(x, 4))
}

fn humanize_duration(v: f64) -> String {
    if v.is_nan() || v.is_infinite() {
        return fmt_g(v, 4);
    }
    if v == 0.0 {
        return "0s".into();
    }
    if v.abs() >= 1.0 {
        let sign = if v < 0.0 { "-" } else { "" };
        let total = v.abs() as i64;
        let (days, hours, minutes, seconds) = (
            total / 86_400,
            (total / 3_600) % 24,
            (total / 60) % 60,
            total % 60,
        );
        return if days != 0 {
            format!("{sign}{days}d {hours}h {minutes}m {seconds}s")
        } else if hours != 0 {
            format!("{sign}{hours}h {minutes}m {seconds}s")
        } else if minutes != 0 {
            format!("{sign}{minutes}m {seconds}s")
        } else {
            format!("{sign}{}s", fmt_g(v.abs(), 4))
        };
    }
    let mut x = v;
    let mut prefix = "";
    for p in ["m", "u", "n", "p", "f", "a", "z", "y"] {
        if x.abs() >= 1.0 {
            break;
        }
        prefix = p;
        x *= 1000.0;
    }
    format!("{}{prefix}s", fmt_g(x, 4))
}

/// Go's `printf` for the verbs alert templates use: `%s %v %d %f %g %e %%` with optional
/// width and precision.
fn printf(format: &str, args: &[Val]) -> Result<String, String> {
    let mut out = String::new();
    let mut chars = format.chars().peekable();
    let mut next_arg = args.iter();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut spec = String::new();
        while let Some(&d) = chars.peek() {
            if d.is_ascii_digit() || d == '.' || d == '-' || d == '+' {
                spec.push(d);
                chars.next();
            } else {
                break;
            }
        }
        let Some(verb) = chars.next() else {
            out.push('%');
            break;
        };
        if verb == '%' {
            out.push('%');
            continue;
        }
        let (width, prec) = match spec.split_once('.') {
            Some((w, p)) => (w.to_owned(), p.parse::<usize>().ok()),
            None => (spec.clone(), None),
        };
        let Some(arg) = next_arg.next() else {
            out.push_str(&format!("%!{verb}(MISSING)"));
            continue;
        };
        let body = match verb {
            's' | 'v' => arg.text(),
            'd' => match arg.num() {
                Some(n) => format!("{}", n.trunc() as i64),
                None => format!("%!d({})", arg.text()),
            },
            'f' | 'F' => match arg.num() {
                Some(n) => format!("{n:.*}", prec.unwrap_or(6)),
                None => format!("%!f({})", arg.text()),
            },
            'g' => match arg.num() {
                Some(n) => prec.map_or_else(|| go_float(n), |p| fmt_g(n, p)),
                None => format!("%!g({})", arg.text()),
            },
            'e' => match arg.num() {
                Some(n) => {
                    let s = format!("{n:.*e}", prec.unwrap_or(6));
                    match s.split_once('e') {
                        Some((m, e)) if e.starts_with('-') => format!("{m}e-{:0>2}", &e[1..]),
                        Some((m, e)) => format!("{m}e+{e:0>2}"),
                        None => s,
                    }
                }
                None => format!("%!e({})", arg.text()),
            },
            other => return Err(format!("printf verb %{other} is not supported")),
        };
        let left = width.starts_with('-');
        let w: usize = width.trim_start_matches(['-', '+']).parse().unwrap_or(0);
        if body.chars().count() < w {
            let pad = " ".repeat(w - body.chars().count());
            if left {
                out.push_str(&body);
                out.push_str(&pad);
            } else {
                out.push_str(&pad);
                out.push_str(&body);
            }
        } else {
            out.push_str(&body);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels() -> LabelSet {
        [
            ("device", "pi-7"),
            ("site", "berlin"),
            ("mountpoint", "/data"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
    }

    fn ex(t: &str, v: f64) -> String {
        Template::parse(t).expect(t).expand(&labels(), v)
    }

    #[test]
    fn labels_and_value() {
        assert_eq!(
            ex("{{ $labels.device }} at {{$labels.site}}", 1.0),
            "pi-7 at berlin"
        );
        assert_eq!(ex("{{ .Labels.device }}: {{ .Value }}", 85.5), "pi-7: 85.5");
        assert_eq!(ex("{{ $value }}", 0.25), "0.25");
        assert_eq!(ex("{{ $labels.missing }}|", 0.0), "|");
        assert_eq!(ex("{{ index $labels \"mountpoint\" }}", 0.0), "/data");
        assert_eq!(ex("no actions", 0.0), "no actions");
        assert_eq!(ex("a {{- $labels.site -}} b", 0.0), "aberlinb");
    }

    #[test]
    fn functions() {
        assert_eq!(ex("{{ $value | humanize }}", 1234567.0), "1.235M");
        assert_eq!(ex("{{ $value | humanize }}", 0.0123), "12.3m");
        assert_eq!(ex("{{ $value | humanize1024 }}", 2048.0), "2ki");
        assert_eq!(ex("{{ $value | humanizePercentage }}", 0.9312), "93.12%");
        assert_eq!(
            ex("{{ $value | humanizeDuration }}", 90061.0),
            "1d 1h 1m 1s"
        );
        assert_eq!(ex("{{ $value | humanizeDuration }}", 42.5), "42.5s");
        assert_eq!(ex("{{ $value | humanizeDuration }}", 0.25), "250ms");
        assert_eq!(ex("{{ printf \"%.1f\" $value }}", 85.25), "85.2");
        assert_eq!(ex("{{ $value | printf \"%.2f°C\" }}", 85.0), "85.00°C");
        assert_eq!(ex("{{ $labels.site | toUpper }}", 0.0), "BERLIN");
        assert_eq!(ex("{{ printf \"%d%%\" 42.9 }}", 0.0), "42%");
    }

    #[test]
    fn mistakes_fail_at_parse() {
        for bad in [
            "{{ $labels.device",
            "{{ $lables.device }}",
            "{{ humanise $value }}",
            "{{ }}",
            "{{ .Foo }}",
            "{{ $value | $labels }}",
            "x }}",
            "{{ index $labels }}",
        ] {
            assert!(Template::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn g_format_matches_go() {
        assert_eq!(fmt_g(85.0, 4), "85");
        assert_eq!(fmt_g(1.23456, 4), "1.235");
        assert_eq!(fmt_g(123456.0, 4), "1.235e+05");
        assert_eq!(fmt_g(0.00001234, 4), "1.234e-05");
        assert_eq!(go_float(1e21), "1e+21");
        assert_eq!(go_float(3.0), "3");
    }
}
