//! Herald's signatures checked by an independent implementation (the Python
//! `standardwebhooks` package, installed by `scripts/test`), and secret rotation.

use std::process::Command;

use serde_json::json;

use crate::helpers::{TestApp, eventually, string};
use crate::receiver::{Received, TestReceiver};

/// Verifies `received` with the Python reference library; returns its verdict.
fn python_verifies(received: &Received, secret: &str) -> bool {
    let dir = tempfile::tempdir().expect("tempdir");
    let body = dir.path().join("body");
    std::fs::write(&body, &received.body).expect("write body");
    let script = "import sys\n\
                  from standardwebhooks.webhooks import Webhook\n\
                  secret, path, msg_id, ts, sig = sys.argv[1:6]\n\
                  body = open(path, 'rb').read()\n\
                  headers = {'webhook-id': msg_id, 'webhook-timestamp': ts, 'webhook-signature': sig}\n\
                  Webhook(secret).verify(body, headers)\n\
                  print('verified')";
    let python = std::env::var("HERALD_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let output = Command::new(python)
        .args(["-c", script, secret])
        .arg(&body)
        .args([
            received.header("webhook-id"),
            received.header("webhook-timestamp"),
            received.header("webhook-signature"),
        ])
        .output()
        .expect("run python (scripts/test installs standardwebhooks)");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !stderr.contains("ModuleNotFoundError"),
        "standardwebhooks is not installed; run scripts/test:\n{stderr}"
    );
    output.status.success()
}

#[tokio::test]
async fn the_reference_library_verifies_deliveries_across_a_secret_rotation() {
    let app = TestApp::spawn().await;
    let receiver = TestReceiver::start().await;
    let (_, key) = app.tenant("Acme").await;
    let target = app.target(&key, &receiver.url("/hook")).await;
    let target_id = string(&target["id"]);
    let old_secret = string(&target["secret"]);
    let filter = app.filter(&key, &["*"]).await;
    app.subscription(&key, &target_id, &string(&filter["id"]))
        .await;

    app.post(
        "/v1/events",
        &key,
        json!({ "type": "a.b", "payload": { "email": "x@example.com" } }),
    )
    .await
    .expect(202);
    let first = eventually("the first delivery", || async { receiver.received().pop() }).await;
    assert!(
        python_verifies(&first, &old_secret),
        "verified with the target's secret"
    );
    assert!(
        !python_verifies(&first, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
        "and not with another"
    );

    let rotated = app
        .call(
            reqwest::Method::POST,
            &format!("/v1/webhooks/targets/{target_id}/rotate-secret"),
            Some(&key),
            None,
        )
        .await
        .expect(200);
    let new_secret = string(&rotated["secret"]);
    assert_ne!(new_secret, old_secret);
    assert!(rotated["previousSecretExpiresAt"].is_string());

    app.post(
        "/v1/events",
        &key,
        json!({ "type": "a.b", "payload": [1, 2, 3] }),
    )
    .await
    .expect(202);
    let second = eventually("the second delivery", || async {
        let all = receiver.received();
        (all.len() >= 2).then(|| all[1].clone())
    })
    .await;
    assert_eq!(
        second.header("webhook-signature").split(' ').count(),
        2,
        "both secrets sign during the grace period"
    );
    assert!(
        python_verifies(&second, &new_secret),
        "receivers on the new secret verify"
    );
    assert!(
        python_verifies(&second, &old_secret),
        "receivers still on the old secret verify"
    );
}
