//! Prints the admin API's OpenAPI document (what `GET /admin/v1/openapi.json` serves) to stdout,
//! for `scripts/validate-openapi` and for client generators that want the file without a
//! running gateway:
//!
//! ```sh
//! cargo run --example openapi > openapi.json
//! ```

fn main() {
    let document = wechat_gateway::http::admin::openapi_document();
    println!(
        "{}",
        document
            .to_pretty_json()
            .expect("the OpenAPI document serializes")
    );
}
