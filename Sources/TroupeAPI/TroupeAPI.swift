// The types, the server protocol (`APIProtocol`) and the `Client` of Troupe's HTTP API are
// generated at build time from openapi.yaml, the source of truth (see docs/API.md).
