// Package meta is the registry's metadata model shared by api, raftstore and
// node: the records the state machine keeps (manifests, blobs, upload
// sessions), the commands that change them, and the domain errors those
// commands return. It has no behaviour beyond encoding and validation, so that
// api can speak about state without importing raftstore, and raftstore can
// return errors api understands without importing api.
package meta
