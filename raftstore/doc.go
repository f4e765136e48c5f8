// Package raftstore owns consensus and the registry state machine:
// hashicorp/raft with raft-boltdb/v2 as log and stable store, the bbolt FSM
// that applies meta.Commands deterministically, snapshots (which double as
// metadata backups), and read consistency (applied-index waits and the
// batched leader read index). It knows nothing of HTTP, blobs or gRPC.
package raftstore
