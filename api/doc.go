// Package api serves the OCI Distribution HTTP API and the node's operational
// endpoints (/healthz, /readyz, /metrics, /cluster/status). It owns routing,
// request validation, the OCI error JSON, manifest parsing, the blob upload
// protocol (hash state carried between requests) and response headers. It
// declares the small interfaces it needs (Registry for metadata, BlobStore
// for bytes) and imports neither raftstore nor blobstore.
package api
