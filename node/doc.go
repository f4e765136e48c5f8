// Package node wires one Flotilla node: it opens the data dir (checking its
// format version), starts raft and the state machine (raftstore), the blob
// store driver (blobstore) and the HTTP API (api), adapts them to the
// interfaces api declares, and shuts them down in order. Cluster concerns
// live here too: forwarding writes to the leader, read-index requests, join
// and leave, and the gRPC service between nodes.
package node
