/// The OpenAPI 3.1 description of the API, served at /openapi.json. A test calls
/// every path and method listed here.
enum OpenAPIDocument {
    static let json = #"""
    {
      "openapi": "3.1.0",
      "info": {"title": "Civitas broker API", "version": "1",
               "description": "Requests to every route tagged 'signed' carry an HTTP Message Signature (RFC 9421, Ed25519) covering @method, @target-uri and content-digest (RFC 9530), with created, nonce, keyid (the participant's key id) and alg=\"ed25519\"."},
      "components": {
        "securitySchemes": {"httpMessageSignature": {"type": "apiKey", "in": "header", "name": "Signature",
          "description": "RFC 9421 signature; see info.description."}},
        "schemas": {
          "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "object", "required": ["code", "message"],
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}, "details": {"type": "array", "items": {"type": "string"}}}}}},
          "Participant": {"type": "object", "required": ["key_id", "name", "role", "ed25519", "x25519", "registered"],
            "properties": {"key_id": {"type": "string"}, "name": {"type": "string"}, "role": {"type": "string", "enum": ["operator", "agency", "partner", "auditor", "consent-service"]},
                           "ed25519": {"type": "string"}, "x25519": {"type": "string"}, "registered": {"type": "string"}}},
          "Dataset": {"type": "object", "required": ["id", "publisher", "schema_sha256", "purposes", "registered"],
            "properties": {"id": {"type": "string"}, "publisher": {"type": "string"}, "schema_sha256": {"type": "string"},
                           "purposes": {"type": "array", "items": {"type": "string"}}, "registered": {"type": "string"}}},
          "Batch": {"type": "object", "required": ["dataset", "sequence", "records", "content_sha256", "replayed"],
            "properties": {"dataset": {"type": "string"}, "sequence": {"type": "integer"}, "records": {"type": "integer"},
                           "content_sha256": {"type": "string"}, "replayed": {"type": "boolean"}}}
        },
        "responses": {
          "Unauthorized": {"description": "Missing, bad, stale or replayed signature.", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
          "Forbidden": {"description": "A valid participant without the needed role.", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
        }
      },
      "paths": {
        "/healthz": {"get": {"summary": "Liveness", "responses": {"200": {"description": "The broker is up."}}}},
        "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "Metrics in the Prometheus text format."}}}},
        "/openapi.json": {"get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI 3.1."}}}},
        "/catalog": {"get": {"summary": "DCAT-AP catalog of the datasets (JSON-LD); nothing personal", "responses": {"200": {"description": "The catalog."}}}},
        "/admin/participants": {"post": {"summary": "Register a participant (operator)", "tags": ["signed"], "security": [{"httpMessageSignature": []}],
          "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object", "required": ["name", "role", "ed25519", "x25519"]}}}},
          "responses": {"201": {"description": "Registered.", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Participant"}}}},
                        "400": {"description": "Malformed."}, "401": {"$ref": "#/components/responses/Unauthorized"}, "403": {"$ref": "#/components/responses/Forbidden"},
                        "409": {"description": "Already registered."}}}},
        "/participants": {"get": {"summary": "List participants", "tags": ["signed"], "security": [{"httpMessageSignature": []}],
          "responses": {"200": {"description": "The participants."}, "401": {"$ref": "#/components/responses/Unauthorized"}}}},
        "/datasets": {"post": {"summary": "Register a dataset with its schema (agency)", "tags": ["signed"], "security": [{"httpMessageSignature": []}],
          "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object", "required": ["id", "schema"],
            "properties": {"id": {"type": "string", "pattern": "^[a-z0-9._-]{1,128}$"}, "schema": {"type": "object", "description": "JSON Schema 2020-12 with x-privacy annotations"},
                           "purposes": {"type": "array", "maxItems": 32, "items": {"type": "string", "pattern": "^[a-z0-9._-]{1,64}$"}, "description": "Purposes the dataset is offered for"}}}}}},
          "responses": {"201": {"description": "Registered.", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Dataset"}}}},
                        "401": {"$ref": "#/components/responses/Unauthorized"}, "403": {"$ref": "#/components/responses/Forbidden"},
                        "409": {"description": "Already registered."}, "422": {"description": "The schema is not a valid dataset schema."}}}},
        "/datasets/{dataset}": {"get": {"summary": "A dataset", "tags": ["signed"], "security": [{"httpMessageSignature": []}],
          "parameters": [{"name": "dataset", "in": "path", "required": true, "schema": {"type": "string"}}],
          "responses": {"200": {"description": "The dataset.", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Dataset"}}}},
                        "401": {"$ref": "#/components/responses/Unauthorized"}, "404": {"description": "Not registered."}}}},
        "/datasets/{dataset}/batches": {"post": {"summary": "Upload a batch of records (the dataset's publisher)", "tags": ["signed"], "security": [{"httpMessageSignature": []}],
          "parameters": [{"name": "dataset", "in": "path", "required": true, "schema": {"type": "string"}},
                         {"name": "Idempotency-Key", "in": "header", "required": false, "schema": {"type": "string"}}],
          "requestBody": {"required": true, "content": {"text/csv": {"schema": {"type": "string"}}}},
          "responses": {"201": {"description": "Stored.", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Batch"}}}},
                        "200": {"description": "The same batch was already stored under this idempotency key."},
                        "401": {"$ref": "#/components/responses/Unauthorized"}, "403": {"$ref": "#/components/responses/Forbidden"},
                        "404": {"description": "Not registered."}, "409": {"description": "The idempotency key was used for other content."},
                        "415": {"description": "Not text/csv."},
                        "422": {"description": "The batch does not match the schema; details list row, field and reason; nothing stored.",
                                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}}}}
      }
    }
    """#
}
