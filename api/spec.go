package api

import _ "embed"

// OpenAPI is the hand-written OpenAPI 3.1 document of the Lifeline HTTP API
// (openapi.yaml). The server serves it at GET /openapi.yaml, and contract tests
// (internal/apitest) validate real requests and responses against it.
//
//go:embed openapi.yaml
var OpenAPI []byte
