//! MLflow's search grammar (spec §6): `clause [AND clause]*` filters and `order_by` lists,
//! parsed once and evaluated in memory against whatever is searched, so LIKE and ordering
//! behave the same on SQLite and PostgreSQL.

use std::cmp::Ordering;

use crate::error::{invalid, TrackingError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entity {
    Metric,
    Param,
    Tag,
    Attribute,
    Dataset,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
    Like,
    ILike,
    In,
    NotIn,
    IsNull,
    IsNotNull,
}

impl Op {
    fn text(self) -> &'static str {
        match self {
            Op::Eq => "=",
            Op::Ne => "!=",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Like => "LIKE",
            Op::ILike => "ILIKE",
            Op::In => "IN",
            Op::NotIn => "NOT IN",
            Op::IsNull => "IS NULL",
            Op::IsNotNull => "IS NOT NULL",
        }
    }

    fn is_numeric(self) -> bool {
        matches!(self, Op::Eq | Op::Ne | Op::Gt | Op::Ge | Op::Lt | Op::Le)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Str(String),
    Num(f64),
    List(Vec<String>),
    None,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Clause {
    pub entity: Entity,
    pub key: String,
    pub op: Op,
    pub value: Literal,
}

/// A field's value on one searched item, as the evaluator sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum Field<'a> {
    Str(&'a str),
    Num(f64),
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Word(String),
    Quoted(String),
    Backticked(String),
    Number(f64),
    Comparator(String),
    LParen,
    RParen,
    Comma,
}

fn tokenize(input: &str) -> Result<Vec<Token>, TrackingError> {
    if input.contains('\0') {
        return Err(invalid("Invalid filter string: NUL bytes are not allowed"));
    }
    let chars: Vec<char> = input.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '\'' || c == '"' || c == '`' {
            let mut j = i + 1;
            let mut s = String::new();
            loop {
                match chars.get(j) {
                    None => {
                        return Err(invalid(format!(
                            "Invalid filter string '{input}': unterminated quote"
                        )))
                    }
                    Some(&q) if q == c => {
                        // SQL style: a doubled quote inside a string is one quote.
                        if chars.get(j + 1) == Some(&c) {
                            s.push(c);
                            j += 2;
                            continue;
                        }
                        break;
                    }
                    Some(&x) => {
                        s.push(x);
                        j += 1;
                    }
                }
            }
            out.push(if c == '`' {
                Token::Backticked(s)
            } else {
                Token::Quoted(s)
            });
            i = j + 1;
        } else if c == '(' {
            out.push(Token::LParen);
            i += 1;
        } else if c == ')' {
            out.push(Token::RParen);
            i += 1;
        } else if c == ',' {
            out.push(Token::Comma);
            i += 1;
        } else if "=!<>~".contains(c) {
            let mut j = i;
            while j < chars.len() && "=!<>~".contains(chars[j]) {
                j += 1;
            }
            out.push(Token::Comparator(chars[i..j].iter().collect()));
            i = j;
        } else if c.is_ascii_digit()
            || ((c == '-' || c == '+' || c == '.')
                && chars
                    .get(i + 1)
                    .is_some_and(|d| d.is_ascii_digit() || *d == '.'))
        {
            let mut j = i + 1;
            while j < chars.len()
                && (chars[j].is_ascii_alphanumeric() || ".+-".contains(chars[j]))
                && (!matches!(chars[j], '+' | '-') || matches!(chars[j - 1], 'e' | 'E'))
            {
                j += 1;
            }
            let text: String = chars[i..j].iter().collect();
            let n = text.parse::<f64>().map_err(|_| {
                invalid(format!(
                    "Invalid filter string '{input}': '{text}' is not a number"
                ))
            })?;
            out.push(Token::Number(n));
            i = j;
        } else {
            let mut j = i;
            while j < chars.len() && !chars[j].is_whitespace() && !"'\"`(),=!<>~".contains(chars[j])
            {
                j += 1;
            }
            out.push(Token::Word(chars[i..j].iter().collect()));
            i = j;
        }
    }
    Ok(out)
}

/// Which identifiers a search accepts; unknown ones are refused with the valid list.
pub struct Grammar {
    pub entities: &'static [Entity],
    /// Attribute keys that hold strings, and those that hold numbers.
    pub string_attributes: &'static [&'static str],
    pub numeric_attributes: &'static [&'static str],
    /// Attributes on which `IN` / `NOT IN` are allowed.
    pub list_attributes: &'static [&'static str],
    /// Spellings that mean another attribute (`created` → `start_time`).
    pub aliases: &'static [(&'static str, &'static str)],
}

impl Grammar {
    fn entity(&self, prefix: &str) -> Option<Entity> {
        let e = match prefix.to_ascii_lowercase().as_str() {
            "metric" | "metrics" => Entity::Metric,
            "param" | "params" | "parameter" | "parameters" => Entity::Param,
            "tag" | "tags" => Entity::Tag,
            "attribute" | "attributes" | "attr" | "run" => Entity::Attribute,
            "dataset" | "datasets" => Entity::Dataset,
            _ => return None,
        };
        self.entities.contains(&e).then_some(e)
    }

    fn attribute(&self, key: &str) -> Result<String, TrackingError> {
        let key = self
            .aliases
            .iter()
            .find(|(alias, _)| *alias == key)
            .map(|(_, k)| *k)
            .unwrap_or(key);
        if self.string_attributes.contains(&key) || self.numeric_attributes.contains(&key) {
            return Ok(key.to_string());
        }
        let mut valid: Vec<&str> = self.string_attributes.to_vec();
        valid.extend(self.numeric_attributes);
        Err(invalid(format!(
            "Invalid attribute key '{key}' specified. Valid keys are '{valid:?}'"
        )))
    }

    /// Reads `<entity>.<key>` (or a bare attribute) from the token stream.
    fn identifier(
        &self,
        tokens: &[Token],
        i: &mut usize,
    ) -> Result<(Entity, String), TrackingError> {
        let Some(token) = tokens.get(*i) else {
            return Err(invalid("Invalid filter string: expected an identifier"));
        };
        *i += 1;
        let (entity, key) = match token {
            Token::Word(w) => match w.split_once('.') {
                Some((prefix, rest)) => {
                    let entity = self.entity(prefix).ok_or_else(|| {
                        invalid(format!(
                            "Invalid entity type '{prefix}'. Valid values are {:?}",
                            self.entities
                        ))
                    })?;
                    if rest.is_empty() {
                        match tokens.get(*i) {
                            Some(Token::Quoted(k)) | Some(Token::Backticked(k)) => {
                                *i += 1;
                                (entity, k.clone())
                            }
                            _ => return Err(invalid(format!("Invalid identifier '{w}'"))),
                        }
                    } else {
                        (entity, rest.to_string())
                    }
                }
                None => (Entity::Attribute, w.clone()),
            },
            Token::Backticked(k) | Token::Quoted(k) => (Entity::Attribute, k.clone()),
            other => return Err(invalid(format!("Invalid identifier {other:?}"))),
        };
        if entity == Entity::Attribute {
            return Ok((entity, self.attribute(&key)?));
        }
        Ok((entity, key))
    }
}

fn comparator(tokens: &[Token], i: &mut usize) -> Result<Op, TrackingError> {
    let word =
        |t: Option<&Token>, w: &str| matches!(t, Some(Token::Word(x)) if x.eq_ignore_ascii_case(w));
    let token = tokens.get(*i);
    *i += 1;
    Ok(match token {
        Some(Token::Comparator(c)) => match c.as_str() {
            "=" | "==" => Op::Eq,
            "!=" | "<>" => Op::Ne,
            ">" => Op::Gt,
            ">=" => Op::Ge,
            "<" => Op::Lt,
            "<=" => Op::Le,
            other => {
                return Err(invalid(format!(
                    "Invalid comparator '{other}' not one of '['=', '!=', '>', '>=', '<', \
                     '<=', 'LIKE', 'ILIKE', 'IN', 'NOT IN', 'IS NULL', 'IS NOT NULL']'"
                )))
            }
        },
        t if word(t, "LIKE") => Op::Like,
        t if word(t, "ILIKE") => Op::ILike,
        t if word(t, "IN") => Op::In,
        t if word(t, "NOT") && word(tokens.get(*i), "IN") => {
            *i += 1;
            Op::NotIn
        }
        t if word(t, "IS") => {
            if word(tokens.get(*i), "NULL") {
                *i += 1;
                Op::IsNull
            } else if word(tokens.get(*i), "NOT") && word(tokens.get(*i + 1), "NULL") {
                *i += 2;
                Op::IsNotNull
            } else {
                return Err(invalid(
                    "Invalid comparator 'IS': expected IS NULL or IS NOT NULL",
                ));
            }
        }
        Some(other) => {
            return Err(invalid(format!(
                "Invalid comparator '{}' not one of '['=', '!=', '>', '>=', '<', '<=', 'LIKE', \
                 'ILIKE', 'IN', 'NOT IN', 'IS NULL', 'IS NOT NULL']'",
                token_text(other)
            )))
        }
        None => return Err(invalid("Invalid filter string: expected a comparator")),
    })
}

fn token_text(t: &Token) -> String {
    match t {
        Token::Word(w) | Token::Quoted(w) | Token::Backticked(w) | Token::Comparator(w) => {
            w.clone()
        }
        Token::Number(n) => n.to_string(),
        Token::LParen => "(".into(),
        Token::RParen => ")".into(),
        Token::Comma => ",".into(),
    }
}

fn literal(tokens: &[Token], i: &mut usize) -> Result<Literal, TrackingError> {
    let token = tokens.get(*i).cloned();
    *i += 1;
    Ok(match token {
        Some(Token::Quoted(s)) => Literal::Str(s),
        Some(Token::Number(n)) => Literal::Num(n),
        Some(Token::LParen) => {
            let mut items = Vec::new();
            loop {
                match tokens.get(*i) {
                    Some(Token::Quoted(s)) => items.push(s.clone()),
                    _ => {
                        return Err(invalid(
                            "Invalid filter string: IN lists hold quoted strings, like ('a', 'b')",
                        ))
                    }
                }
                *i += 1;
                match tokens.get(*i) {
                    Some(Token::Comma) => *i += 1,
                    Some(Token::RParen) => {
                        *i += 1;
                        break;
                    }
                    _ => return Err(invalid("Invalid filter string: unterminated IN list")),
                }
            }
            Literal::List(items)
        }
        Some(Token::Word(w)) => {
            return Err(invalid(format!(
                "Invalid filter string: value '{w}' must be quoted (strings) or a number"
            )))
        }
        Some(other) => return Err(invalid(format!("Invalid value '{}'", token_text(&other)))),
        None => return Err(invalid("Invalid filter string: expected a value")),
    })
}

/// Parses a filter; an empty or blank filter is no clause at all.
pub fn parse_filter(grammar: &Grammar, input: &str) -> Result<Vec<Clause>, TrackingError> {
    let tokens = tokenize(input)?;
    for t in &tokens {
        if let Token::Word(w) = t {
            if w.eq_ignore_ascii_case("OR") {
                return Err(invalid(format!(
                    "Invalid clause(s) in filter string: '{w}'. Only AND is supported"
                )));
            }
        }
    }
    let mut clauses = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        if !clauses.is_empty() {
            match tokens.get(i) {
                Some(Token::Word(w)) if w.eq_ignore_ascii_case("AND") => i += 1,
                Some(t) => {
                    return Err(invalid(format!(
                        "Invalid clause(s) in filter string: '{}'",
                        token_text(t)
                    )))
                }
                None => break,
            }
        }
        let (entity, key) = grammar.identifier(&tokens, &mut i)?;
        let op = comparator(&tokens, &mut i)?;
        let value = if matches!(op, Op::IsNull | Op::IsNotNull) {
            Literal::None
        } else {
            literal(&tokens, &mut i)?
        };
        clauses.push(check(
            grammar,
            Clause {
                entity,
                key,
                op,
                value,
            },
        )?);
    }
    Ok(clauses)
}

/// Refuses operator/value combinations the entity does not support.
fn check(grammar: &Grammar, clause: Clause) -> Result<Clause, TrackingError> {
    let numeric = match clause.entity {
        Entity::Metric => true,
        Entity::Attribute => grammar.numeric_attributes.contains(&clause.key.as_str()),
        _ => false,
    };
    let op = clause.op;
    let bad = |why: &str| {
        Err(invalid(format!(
            "Invalid comparator '{}' for {:?} '{}': {why}",
            op.text(),
            clause.entity,
            clause.key
        )))
    };
    match op {
        Op::IsNull | Op::IsNotNull if !matches!(clause.entity, Entity::Param | Entity::Tag) => {
            return Err(invalid(
                "IS NULL / IS NOT NULL is only supported for tags and params.",
            ));
        }
        Op::In | Op::NotIn => {
            let listable = match clause.entity {
                Entity::Attribute => grammar.list_attributes.contains(&clause.key.as_str()),
                Entity::Dataset => true,
                _ => false,
            };
            if !listable {
                return bad("IN is not supported here");
            }
            if !matches!(clause.value, Literal::List(_)) {
                return bad("IN takes a list like ('a', 'b')");
            }
        }
        Op::Like | Op::ILike if numeric => return bad("LIKE applies to strings"),
        Op::Gt | Op::Ge | Op::Lt | Op::Le if !numeric => {
            return bad("only = != LIKE ILIKE apply to strings")
        }
        _ => {}
    }
    if op.is_numeric() || matches!(op, Op::Like | Op::ILike) {
        match (&clause.value, numeric) {
            (Literal::Num(_), true) | (Literal::Str(_), false) => {}
            (Literal::Str(s), true) => {
                // Times and versions may be quoted numbers.
                if s.trim().parse::<f64>().is_err() {
                    return Err(invalid(format!(
                        "Expected numeric value for {:?} '{}', got '{s}'",
                        clause.entity, clause.key
                    )));
                }
            }
            (Literal::Num(n), false) => {
                return Err(invalid(format!(
                    "Expected a quoted string value for {:?} '{}' (got {n})",
                    clause.entity, clause.key
                )))
            }
            _ => return bad("unsupported value"),
        }
    }
    Ok(clause)
}

/// SQL LIKE: `%` any run, `_` one character.
pub fn like(text: &str, pattern: &str, case_insensitive: bool) -> bool {
    let (t, p): (Vec<char>, Vec<char>) = if case_insensitive {
        (
            text.to_lowercase().chars().collect(),
            pattern.to_lowercase().chars().collect(),
        )
    } else {
        (text.chars().collect(), pattern.chars().collect())
    };
    // Iterative wildcard match with backtracking to the last `%`.
    let (mut ti, mut pi) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '_' || p[pi] == t[ti]) {
            ti += 1;
            pi += 1;
        } else if pi < p.len() && p[pi] == '%' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '%')
}

impl Clause {
    /// Whether an item whose field is `value` passes; a missing field passes only IS NULL.
    pub fn matches(&self, value: Option<Field<'_>>) -> bool {
        let Some(value) = value else {
            return self.op == Op::IsNull;
        };
        match (self.op, value, &self.value) {
            (Op::IsNull, ..) => false,
            (Op::IsNotNull, ..) => true,
            (op, Field::Num(v), lit) => {
                let target = match lit {
                    Literal::Num(n) => *n,
                    Literal::Str(s) => match s.trim().parse::<f64>() {
                        Ok(n) => n,
                        Err(_) => return false,
                    },
                    _ => return false,
                };
                match op {
                    Op::Eq => v == target,
                    Op::Ne => v != target,
                    Op::Gt => v > target,
                    Op::Ge => v >= target,
                    Op::Lt => v < target,
                    Op::Le => v <= target,
                    _ => false,
                }
            }
            (op, Field::Str(s), lit) => match (op, lit) {
                (Op::Eq, Literal::Str(t)) => s == t,
                (Op::Ne, Literal::Str(t)) => s != t,
                (Op::Like, Literal::Str(t)) => like(s, t, false),
                (Op::ILike, Literal::Str(t)) => like(s, t, true),
                (Op::In, Literal::List(items)) => items.iter().any(|i| i == s),
                (Op::NotIn, Literal::List(items)) => !items.iter().any(|i| i == s),
                // A numeric comparison on a string attribute holding a number (versions).
                (_, Literal::Num(_)) => match s.parse::<f64>() {
                    Ok(n) => self.matches(Some(Field::Num(n))),
                    Err(_) => false,
                },
                _ => false,
            },
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct OrderKey {
    pub entity: Entity,
    pub key: String,
    pub ascending: bool,
}

/// Parses `order_by` entries (`metrics.loss DESC`, `` tags.`a b` ``, `start_time`).
pub fn parse_order_by(grammar: &Grammar, items: &[String]) -> Result<Vec<OrderKey>, TrackingError> {
    let mut out: Vec<OrderKey> = Vec::new();
    for item in items {
        let tokens = tokenize(item)?;
        let mut i = 0;
        let (entity, key) = grammar.identifier(&tokens, &mut i)?;
        let ascending = match tokens.get(i) {
            None => true,
            Some(Token::Word(w)) if w.eq_ignore_ascii_case("ASC") => true,
            Some(Token::Word(w)) if w.eq_ignore_ascii_case("DESC") => false,
            Some(t) => {
                return Err(invalid(format!(
                    "Invalid order_by clause '{item}': unexpected '{}'",
                    token_text(t)
                )))
            }
        };
        if tokens.len() > i + 1 {
            return Err(invalid(format!("Invalid order_by clause '{item}'")));
        }
        if matches!(entity, Entity::Dataset) {
            return Err(invalid(format!("Invalid order_by clause '{item}'")));
        }
        if out.iter().any(|o| o.entity == entity && o.key == key) {
            return Err(invalid(format!(
                "`order_by` contains duplicate fields: {item}"
            )));
        }
        out.push(OrderKey {
            entity,
            key,
            ascending,
        });
    }
    Ok(out)
}

/// Orders two optional fields: numbers before NaN before missing, whatever the direction.
pub fn compare(a: Option<&Field<'_>>, b: Option<&Field<'_>>, ascending: bool) -> Ordering {
    fn rank(f: Option<&Field<'_>>) -> u8 {
        match f {
            Some(Field::Num(n)) if n.is_nan() => 1,
            Some(_) => 0,
            None => 2,
        }
    }
    let (ra, rb) = (rank(a), rank(b));
    if ra != rb || ra != 0 {
        return ra.cmp(&rb);
    }
    let ord = match (a, b) {
        (Some(Field::Num(x)), Some(Field::Num(y))) => x.partial_cmp(y).unwrap_or(Ordering::Equal),
        (Some(Field::Str(x)), Some(Field::Str(y))) => x.cmp(y),
        (Some(Field::Num(_)), Some(Field::Str(_))) => Ordering::Less,
        (Some(Field::Str(_)), Some(Field::Num(_))) => Ordering::Greater,
        _ => Ordering::Equal,
    };
    if ascending {
        ord
    } else {
        ord.reverse()
    }
}

/// Orders two items by `order` (each key's field read through `field`); `Equal` when every
/// key ties, for the caller's own tie-breakers.
pub fn order_by<'a, T, F>(a: &'a T, b: &'a T, order: &[OrderKey], field: F) -> Ordering
where
    F: Fn(&'a T, Entity, &str) -> Option<Field<'a>>,
{
    for o in order {
        let ord = compare(
            field(a, o.entity, &o.key).as_ref(),
            field(b, o.entity, &o.key).as_ref(),
            o.ascending,
        );
        if ord.is_ne() {
            return ord;
        }
    }
    Ordering::Equal
}

/// Page tokens are opaque to clients; inside they are an offset.
pub fn encode_page_token(offset: usize) -> String {
    format!("o{offset}")
}

pub fn decode_page_token(token: Option<&str>) -> Result<usize, TrackingError> {
    match token {
        None | Some("") => Ok(0),
        Some(t) => t
            .strip_prefix('o')
            .and_then(|n| n.parse::<u32>().ok())
            .map(|n| n as usize)
            .ok_or_else(|| {
                invalid(format!(
                    "Invalid page token, could not base64-decode: {t:?}"
                ))
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RUNS: Grammar = crate::search::GRAMMAR;

    #[test]
    fn parses_every_clause_shape() {
        let c = parse_filter(
            &RUNS,
            "metrics.acc > 0.5 and params.lr = '0.1' AND tags.\"mlflow.runName\" LIKE 'a%' \
             AND params.`a-b` IS NOT NULL AND run_id IN ('x', 'y') AND attributes.start_time >= -3e2",
        )
        .unwrap();
        assert_eq!(c.len(), 6);
        assert_eq!(c[0].entity, Entity::Metric);
        assert_eq!(c[0].value, Literal::Num(0.5));
        assert_eq!(c[2].key, "mlflow.runName");
        assert_eq!(c[3].key, "a-b");
        assert_eq!(c[3].op, Op::IsNotNull);
        assert_eq!(c[4].value, Literal::List(vec!["x".into(), "y".into()]));
        assert_eq!(c[5].value, Literal::Num(-300.0));
        assert!(parse_filter(&RUNS, "  ").unwrap().is_empty());
    }

    #[test]
    fn refuses_what_mlflow_refuses() {
        for bad in [
            "metrics.a > 1 OR metrics.b > 1",
            "metrics.a >>> 1",
            "params.a = x",
            "metrics.a = 'x'",
            "bogus.a = 'x'",
            "nosuch = 'x'",
            "metrics.a IS NULL",
            "params.a > '1'",
            "status IN ('A')",
            "(metrics.a > 1)",
        ] {
            assert!(parse_filter(&RUNS, bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn evaluates_clauses() {
        let c = &parse_filter(&RUNS, "tags.t != 'b'").unwrap()[0];
        assert!(!c.matches(None), "a missing tag never matches !=");
        assert!(c.matches(Some(Field::Str("a"))));
        let c = &parse_filter(&RUNS, "tags.t IS NULL").unwrap()[0];
        assert!(c.matches(None));
        let c = &parse_filter(&RUNS, "params.p ILIKE '%AB_'").unwrap()[0];
        assert!(c.matches(Some(Field::Str("xxabc"))));
        assert!(!c.matches(Some(Field::Str("xxab"))));
        let c = &parse_filter(&RUNS, "metrics.m <= 2").unwrap()[0];
        assert!(c.matches(Some(Field::Num(2.0))));
        assert!(!c.matches(Some(Field::Num(f64::NAN))));
    }

    #[test]
    fn like_wildcards() {
        assert!(like("abc", "a%", false));
        assert!(like("abc", "%c", false));
        assert!(like("abc", "a_c", false));
        assert!(!like("abc", "A%", false));
        assert!(like("abc", "A%", true));
        assert!(like("a%c", "a%%c", false));
        assert!(!like("ab", "a_c", false));
    }

    #[test]
    fn order_by_and_missing_last() {
        let o = parse_order_by(&RUNS, &["metrics.m DESC".into(), "created".into()]).unwrap();
        assert!(!o[0].ascending);
        assert_eq!(o[1].key, "start_time");
        assert!(parse_order_by(&RUNS, &["metrics.m".into(), "metrics.m DESC".into()]).is_err());
        let one = Field::Num(1.0);
        let nan = Field::Num(f64::NAN);
        assert_eq!(compare(Some(&one), None, false), Ordering::Less);
        assert_eq!(compare(Some(&nan), None, true), Ordering::Less);
        assert_eq!(compare(Some(&one), Some(&nan), false), Ordering::Less);
    }

    #[test]
    fn page_tokens_round_trip() {
        assert_eq!(decode_page_token(Some(&encode_page_token(40))).unwrap(), 40);
        assert!(decode_page_token(Some("garbage")).is_err());
    }
}
