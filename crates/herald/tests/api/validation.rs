//! Bad input: each case names its status and problem type, and the problem's detail
//! must say something useful.

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{ADMIN, Answer, TestApp, answer, string};

enum Body {
    Json(Value),
    Raw(&'static str, Vec<u8>),
    None,
}

struct Case {
    name: &'static str,
    method: Method,
    path: String,
    body: Body,
    status: u16,
    problem: &'static str,
    field: Option<&'static str>,
}

fn case(
    name: &'static str,
    method: Method,
    path: &str,
    body: Body,
    status: u16,
    problem: &'static str,
) -> Case {
    Case {
        name,
        method,
        path: path.to_owned(),
        body,
        status,
        problem,
        field: None,
    }
}

fn invalid(name: &'static str, path: &str, body: Value, field: &'static str) -> Case {
    Case {
        field: Some(field),
        ..case(
            name,
            Method::POST,
            path,
            Body::Json(body),
            422,
            "validation-failed",
        )
    }
}

async fn send(app: &TestApp, key: &str, case: &Case) -> Answer {
    let mut request = app
        .client
        .request(case.method.clone(), format!("{}{}", app.base, case.path))
        .bearer_auth(key);
    request = match &case.body {
        Body::Json(value) => request.json(value),
        Body::Raw(content_type, bytes) => request
            .header("content-type", *content_type)
            .body(bytes.clone()),
        Body::None => request,
    };
    answer(request.send().await.expect("sent")).await
}

#[tokio::test]
async fn bad_inputs_get_clear_problems() {
    let app = TestApp::spawn().await;
    let (_, key) = app.tenant("Acme").await;
    let target = string(&app.target(&key, "https://a.example.com/hook").await["id"]);
    let filter = string(&app.filter(&key, &["a.*"]).await["id"]);
    let targets = "/v1/webhooks/targets";
    let target_path = format!("{targets}/{target}");
    let filters = "/v1/webhooks/filters";
    let subscriptions = "/v1/webhooks/subscriptions";
    let huge = format!(
        "{{\"url\":\"https://a.example.com/{}\"}}",
        "x".repeat(2 << 20)
    )
    .into_bytes();

    let cases = vec![
        invalid(
            "url that is not a URL",
            targets,
            json!({ "url": "not a url" }),
            "url",
        ),
        invalid(
            "ftp url",
            targets,
            json!({ "url": "ftp://a.example.com/" }),
            "url",
        ),
        invalid(
            "file url",
            targets,
            json!({ "url": "file:///etc/passwd" }),
            "url",
        ),
        invalid(
            "credentials in url",
            targets,
            json!({ "url": "https://u:p@a.example.com/" }),
            "url",
        ),
        invalid(
            "timeout of 0",
            targets,
            json!({ "url": "https://a.example.com", "timeoutMs": 0 }),
            "timeoutMs",
        ),
        invalid(
            "timeout over 60 s",
            targets,
            json!({ "url": "https://a.example.com", "timeoutMs": 60001 }),
            "timeoutMs",
        ),
        invalid(
            "maxInFlight of 0",
            targets,
            json!({ "url": "https://a.example.com", "maxInFlight": 0 }),
            "maxInFlight",
        ),
        invalid(
            "negative rate limit",
            targets,
            json!({ "url": "https://a.example.com", "rateLimitPerSecond": -1 }),
            "rateLimitPerSecond",
        ),
        invalid(
            "secret without prefix",
            targets,
            json!({ "url": "https://a.example.com", "secret": "abc" }),
            "secret",
        ),
        invalid(
            "secret too short",
            targets,
            json!({ "url": "https://a.example.com", "secret": "whsec_c2hvcnQ=" }),
            "secret",
        ),
        invalid(
            "reserved header",
            targets,
            json!({ "url": "https://a.example.com", "headers": { "webhook-signature": "x" } }),
            "headers.webhook-signature",
        ),
        invalid(
            "header injection",
            targets,
            json!({ "url": "https://a.example.com", "headers": { "X-A": "b\r\nX-Evil: 1" } }),
            "headers.X-A",
        ),
        invalid("empty filter", filters, json!({ "events": [] }), "events"),
        invalid(
            "malformed pattern",
            filters,
            json!({ "events": ["a.*", "core..orders"] }),
            "events[1]",
        ),
        invalid(
            "wildcard mid-pattern",
            filters,
            json!({ "events": ["core.*.created"] }),
            "events[0]",
        ),
        invalid(
            "missing target",
            subscriptions,
            json!({ "targetId": "tgt_00000000000000000000000000000000", "filterId": filter }),
            "targetId",
        ),
        invalid(
            "200 KB where a target id goes",
            subscriptions,
            json!({ "targetId": "t".repeat(200_000), "filterId": filter }),
            "targetId",
        ),
        invalid(
            "a long pattern with a misplaced star",
            filters,
            json!({ "events": [format!("a*{}", "b".repeat(200_000))] }),
            "events[0]",
        ),
        invalid(
            "missing filter",
            subscriptions,
            json!({ "targetId": target, "filterId": "flt_00000000000000000000000000000000" }),
            "filterId",
        ),
        invalid(
            "target id of the wrong kind",
            subscriptions,
            json!({ "targetId": filter, "filterId": filter }),
            "targetId",
        ),
        invalid(
            "blank tenant name",
            "/v1/tenants",
            json!({ "name": "  " }),
            "name",
        ),
        Case {
            field: Some("url"),
            ..case(
                "null url in a patch",
                Method::PATCH,
                &target_path,
                Body::Json(json!({ "url": null })),
                422,
                "validation-failed",
            )
        },
        case(
            "unknown field",
            Method::POST,
            targets,
            Body::Json(json!({ "url": "https://a.example.com", "sekret": "x" })),
            422,
            "invalid-body",
        ),
        case(
            "missing field",
            Method::POST,
            targets,
            Body::Json(json!({ "description": "no url" })),
            422,
            "invalid-body",
        ),
        case(
            "wrong type",
            Method::POST,
            targets,
            Body::Json(json!({ "url": "https://a.example.com", "active": "yes" })),
            422,
            "invalid-body",
        ),
        case(
            "malformed JSON",
            Method::POST,
            targets,
            Body::Raw("application/json", b"{\"url\": ".to_vec()),
            400,
            "malformed-body",
        ),
        case(
            "wrong content type",
            Method::POST,
            targets,
            Body::Raw("text/plain", b"url=x".to_vec()),
            415,
            "unsupported-media-type",
        ),
        case(
            "no content type",
            Method::POST,
            filters,
            Body::Raw("", b"{}".to_vec()),
            415,
            "unsupported-media-type",
        ),
        case(
            "oversized body",
            Method::POST,
            targets,
            Body::Raw("application/json", huge),
            413,
            "payload-too-large",
        ),
        case(
            "limit of 0",
            Method::GET,
            &format!("{targets}?limit=0"),
            Body::None,
            400,
            "invalid-query",
        ),
        case(
            "limit over the maximum",
            Method::GET,
            &format!("{targets}?limit=100000"),
            Body::None,
            400,
            "invalid-query",
        ),
        case(
            "garbage cursor",
            Method::GET,
            &format!("{targets}?cursor=%%%"),
            Body::None,
            400,
            "invalid-query",
        ),
        case(
            "unknown query parameter",
            Method::GET,
            &format!("{targets}?limt=5"),
            Body::None,
            400,
            "invalid-query",
        ),
        case(
            "malformed id",
            Method::GET,
            &format!("{targets}/banana"),
            Body::None,
            404,
            "not-found",
        ),
        case(
            "path segment that is not UTF-8",
            Method::GET,
            &format!("{targets}/%FF"),
            Body::None,
            404,
            "not-found",
        ),
        case(
            "raw event body far over the payload limit",
            Method::POST,
            "/v1/events/a.raw",
            Body::Raw("text/plain", vec![b'x'; (5 << 20) + (128 << 10)]),
            413,
            "payload-too-large",
        ),
        case(
            "secret rotation body over the management limit",
            Method::POST,
            &format!("{target_path}/rotate-secret"),
            Body::Raw("application/json", vec![b' '; 2 << 20]),
            413,
            "payload-too-large",
        ),
        case(
            "unknown route",
            Method::GET,
            "/v1/webhooks/targetz",
            Body::None,
            404,
            "not-found",
        ),
        case(
            "wrong method",
            Method::PUT,
            &target_path,
            Body::Json(json!({})),
            405,
            "method-not-allowed",
        ),
    ];
    assert!(cases.len() >= 15);
    for case in &cases {
        let credential = if case.path.starts_with("/v1/tenants") {
            ADMIN
        } else {
            &key
        };
        let answer = send(&app, credential, case).await;
        assert_eq!(
            answer.status.as_u16(),
            case.status,
            "{}: {answer:#?}",
            case.name
        );
        let detail = answer.assert_problem(case.status, case.problem);
        assert!(
            detail.len() > 10,
            "{}: detail {detail:?} should explain",
            case.name
        );
        assert!(
            detail.len() < 400,
            "{}: the detail quotes no more than the start of an input ({} bytes)",
            case.name,
            detail.len()
        );
        if let Some(field) = case.field {
            assert_eq!(answer.body["field"], field, "{}: {answer:#?}", case.name);
        }
    }

    // Nothing above changed anything.
    let target_now = app.get(&target_path, &key).await.expect(200);
    assert_eq!(target_now["url"], "https://a.example.com/hook");
    let (items, _) = app.list_all(targets, &key, 50).await;
    assert_eq!(items.len(), 1);
}
