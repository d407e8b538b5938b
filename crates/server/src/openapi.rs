//! The OpenAPI document that describes the HTTP API, served at `/api/openapi.json`.

pub const DOCUMENT: &str = include_str!("openapi.json");
