//! JWTs verified with a PEM public key: RS256, ES256 and EdDSA.

#![allow(clippy::unwrap_used)]

mod common;

use common::{Hub, client, now, unique};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use ssehub_test_support::sse_client::SseClient;

fn keys(name: &str) -> (String, Vec<u8>) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/keys");
    let public = dir.join(format!("{name}.pub")).to_str().unwrap().to_owned();
    (
        public,
        std::fs::read(dir.join(format!("{name}.key"))).unwrap(),
    )
}

#[tokio::test]
async fn public_keys_verify_their_algorithm() {
    for (name, alg) in [
        ("rsa", Algorithm::RS256),
        ("p256", Algorithm::ES256),
        ("ed25519", Algorithm::EdDSA),
    ] {
        let (public, private) = keys(name);
        let signing = match alg {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(&private),
            Algorithm::ES256 => EncodingKey::from_ec_pem(&private),
            _ => EncodingKey::from_ed_pem(&private),
        }
        .unwrap();
        let hub = Hub::start(&["--jwt-public-key", &public]).await;
        let ch = unique("keys");
        let claims = json!({"sub": "k", "exp": now() + 60,
                            "ssehub.subscribe": [ch], "ssehub.publish": "keys/*"});
        let token = jsonwebtoken::encode(&Header::new(alg), &claims, &signing).unwrap();
        let path = common::sse_path(&[&ch], &format!("&token={token}"));
        let mut c = SseClient::connect(hub.addr, &path, &[]).await.unwrap();
        assert_eq!(c.status(), 200, "{name}");
        // The same token publishes (its `ssehub.publish` matches).
        let res = client()
            .post(hub.url(&format!("/v1/publish/{ch}")))
            .bearer_auth(&token)
            .json(&json!({"data": name}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{name}");
        assert_eq!(c.next_event().await.unwrap().data, format!("\"{name}\""));
        // A token of another algorithm (an HS256 one) is refused.
        let hs = common::token_with("whatever", &claims);
        let path = common::sse_path(&[&ch], &format!("&token={hs}"));
        let c = SseClient::connect(hub.addr, &path, &[]).await.unwrap();
        assert_eq!(c.status(), 401, "{name}");
    }
}
