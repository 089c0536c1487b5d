use super::*;

const GOOD: &str = "\
name: t
duration: 10s
target: embedded
groups:
  - name: a
    clients: 10
    arrival: { rate: 100/s }
    behaviour:
      send: { every: 1s, bytes: 64 }
      reconnect:
        backoff: { strategy: exponential, base: 100ms, cap: 5s, max_attempts: 3 }
        on_close: { 1000: stop, 4000-4999: stop, default: retry }
        on_status: { 401: stop, 5xx: retry }
timeline:
  - { at: 5s, action: drop-all, mode: close, code: 1001 }
";

fn problems(yaml: &str) -> Vec<Problem> {
    match parse(yaml, "p.yaml") {
        Ok(_) => panic!("expected an error for:\n{yaml}"),
        Err(ProfileError::Invalid(p)) => p,
        Err(e) => panic!("unexpected {e}"),
    }
}

fn one(yaml: &str) -> Problem {
    let p = problems(yaml);
    assert_eq!(p.len(), 1, "{p:?}");
    p.into_iter().next().unwrap()
}

#[test]
fn good_profile_parses() {
    let p = parse(GOOD, "p.yaml").unwrap();
    assert_eq!(p.groups[0].clients, 10);
    assert_eq!(p.groups[0].read_buffer.0, 512);
    assert_eq!(
        p.groups[0].behaviour.reconnect.backoff.strategy,
        Strategy::Exponential
    );
    assert_eq!(p.timeline[0].code, Some(1001));
    assert!(p.target.is_embedded());
}

#[test]
fn unknown_key_names_line_column_and_alternatives() {
    let yaml = GOOD.replace(
        "      reconnect:\n        backoff:",
        "      reconnect:\n        backof:",
    );
    let p = one(&yaml);
    assert_eq!((p.line, p.column), (Some(11), Some(9)));
    assert!(
        p.message.contains("unknown field `backof`"),
        "{}",
        p.message
    );
    assert!(
        p.message.contains("expected one of `backoff`"),
        "{}",
        p.message
    );
    let s = p.to_string();
    assert!(s.starts_with("p.yaml:11:9: "), "{s}");
}

#[test]
fn wrong_types_and_units() {
    let p = one(&GOOD.replace("clients: 10", "clients: many"));
    assert_eq!(p.line, Some(6));
    assert!(p.message.contains("invalid type"), "{}", p.message);

    let p = one(&GOOD.replace("duration: 10s", "duration: 10"));
    assert_eq!((p.line, p.column), (Some(2), Some(11)));
    assert!(
        p.message.contains("expected a number with a unit"),
        "{}",
        p.message
    );

    let p = one(&GOOD.replace("rate: 100/s", "rate: fast"));
    assert_eq!(p.line, Some(7));
    assert!(p.message.contains("invalid rate `fast`"), "{}", p.message);

    let p = one(&GOOD.replace("strategy: exponential", "strategy: fibonacci"));
    assert_eq!(p.line, Some(11));
    assert!(p.message.contains("full-jitter"), "{}", p.message);
}

#[test]
fn impossible_values_are_located() {
    let p = one(&GOOD.replace("cap: 5s", "cap: 50ms"));
    assert_eq!(p.path, "groups[0].behaviour.reconnect.backoff.cap");
    assert_eq!(p.line, Some(11));
    assert!(p.message.contains("shorter than base"), "{}", p.message);

    let p = one(&GOOD.replace("clients: 10", "clients: 0"));
    assert_eq!((p.line, p.column), (Some(6), Some(14)));

    let p = one(&GOOD.replace("at: 5s", "at: 15s"));
    assert_eq!(p.path, "timeline[0].at");
    assert_eq!(p.line, Some(15));
    assert!(p.message.contains("never fire"));

    let p = one(&GOOD.replace("code: 1001", "code: 1006"));
    assert!(p.message.contains("cannot be sent"), "{}", p.message);

    let p = one(&GOOD.replace("1000: stop", "999: stop"));
    assert_eq!(p.path, "groups[0].behaviour.reconnect.on_close.999");
    assert_eq!(p.line, Some(12));

    let p = one(&GOOD.replace("bytes: 64", "bytes: 8"));
    assert!(p.message.contains("timing header"));

    let p = one(&GOOD.replace(
        "target: embedded",
        "target: { url: embedded, server: { nice: 20 } }",
    ));
    assert_eq!(p.path, "target.server.nice");
    assert_eq!(p.line, Some(3));
    assert!(p.message.contains("0 to 19"), "{}", p.message);
}

#[test]
fn several_problems_are_reported_together() {
    let yaml = GOOD
        .replace("clients: 10", "clients: 0")
        .replace("cap: 5s", "cap: 1ms");
    assert_eq!(problems(&yaml).len(), 2);
}

#[test]
fn actions_need_the_embedded_target() {
    let p = one(&GOOD.replace("target: embedded", "target: ws://127.0.0.1:9/ws"));
    assert_eq!(p.path, "timeline[0].action");
    assert!(p.message.contains("embedded target"));
}

#[test]
fn target_forms() {
    let long = GOOD.replace(
        "target: embedded",
        "target:\n  url: embedded\n  server: { accept_rate: 100/s, retry_after: 2s }",
    );
    let p = parse(&long, "p").unwrap();
    assert_eq!(p.target.server.accept_rate.unwrap().0, 100.0);
    let p = problems(&GOOD.replace("target: embedded", "target: http://x/"));
    assert_eq!(p[0].path, "target.url");
    assert_eq!((p[0].line, p[0].column), (Some(3), Some(9)));
    let p = one(&GOOD.replace(
        "target: embedded",
        "target:\n  url: embedded\n  server: { acept_rate: 1/s }",
    ));
    assert!(p.message.contains("unknown field `acept_rate`"));
}

#[test]
fn restart_needs_down_for() {
    let p = one(&GOOD.replace(
        "{ at: 5s, action: drop-all, mode: close, code: 1001 }",
        "{ at: 5s, action: restart }",
    ));
    assert!(p.message.contains("down_for"));
    let p = one(&GOOD.replace(
        "{ at: 5s, action: drop-all, mode: close, code: 1001 }",
        "{ at: 5s, action: restart, down_for: 1s, mode: abrupt }",
    ));
    assert_eq!(p.path, "timeline[0].mode");
}

#[test]
fn headers_are_checked() {
    let yaml = GOOD.replace(
        "    arrival: { rate: 100/s }",
        "    arrival: { rate: 100/s }\n    headers: { \"Bad Header\": x, Upgrade: y }",
    );
    let p = problems(&yaml);
    assert_eq!(p.len(), 2, "{p:?}");
    assert!(p.iter().all(|x| x.line == Some(8)), "{p:?}");
}

#[test]
fn not_yaml_at_all() {
    let p = one("name: [unclosed\n");
    assert!(p.line.is_some());
    let p = one("- just\n- a list\n");
    assert!(p.message.contains("invalid type"), "{}", p.message);
}
