// Package blobstore owns blob bytes: one Driver interface and two drivers, the
// local filesystem (the single-node default) and S3 via minio-go. A driver
// stages uploads so that any node can continue one (its state is opaque bytes
// the caller keeps in the state machine), serves range reads, deletes, and
// where it can, presigns GET URLs. It knows nothing of digests, repositories
// or Raft.
package blobstore
