package meta

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
)

// CommandType is the first byte of an encoded command. Values are part of the
// Raft log format: never renumber, only append.
type CommandType byte

const (
	CmdPutManifest    CommandType = 1 // store a manifest, optionally tag it
	CmdDeleteManifest CommandType = 2 // delete a manifest and the tags naming it
	CmdDeleteTag      CommandType = 3 // delete one tag
	CmdMountBlob      CommandType = 4 // link an indexed blob into a repository
	CmdUnlinkBlob     CommandType = 5 // remove a blob from a repository
	CmdStartUpload    CommandType = 6 // open an upload session
	CmdUpdateUpload   CommandType = 7 // advance a session (compare-and-set on offset)
	CmdCompleteUpload CommandType = 8 // index the blob, link it, close the session
	CmdCancelUpload   CommandType = 9 // close a session without a blob
	// CmdNoop changes nothing. A new leader applies one before it serves:
	// raft's own barrier and no-op entries never reach the state machine,
	// so this is the barrier that also moves the applied index the read
	// path waits on up to the leader's commit index.
	CmdNoop CommandType = 10
	// CmdSetMember records a node's addresses (gRPC, HTTP) beside its raft
	// membership, so any node can reach the leader's gRPC service.
	CmdSetMember CommandType = 11
	// CmdRemoveMember forgets a node's addresses after it left raft.
	CmdRemoveMember CommandType = 12

	maxCommandType = CmdRemoveMember
)

func (t CommandType) String() string {
	switch t {
	case CmdPutManifest:
		return "put_manifest"
	case CmdDeleteManifest:
		return "delete_manifest"
	case CmdDeleteTag:
		return "delete_tag"
	case CmdMountBlob:
		return "mount_blob"
	case CmdUnlinkBlob:
		return "unlink_blob"
	case CmdStartUpload:
		return "start_upload"
	case CmdUpdateUpload:
		return "update_upload"
	case CmdCompleteUpload:
		return "complete_upload"
	case CmdCancelUpload:
		return "cancel_upload"
	case CmdNoop:
		return "noop"
	case CmdSetMember:
		return "set_member"
	case CmdRemoveMember:
		return "remove_member"
	}
	return fmt.Sprintf("unknown(%d)", byte(t))
}

// Command is one change to registry metadata. Only the fields its Type uses
// are set. Time is stamped by the leader before the command enters the log,
// so applying it never reads a clock.
type Command struct {
	Type CommandType `json:"-"`
	Time int64       `json:"time,omitempty"`
	// ID names the command across resends: the state machine applies a
	// command with an ID it has seen (within its memory, minutes) only
	// once and answers the first result again, so a node may resend a
	// write whose outcome it does not know.
	ID string `json:"id,omitempty"`

	Repo   string `json:"repo,omitempty"`
	Digest string `json:"digest,omitempty"`
	Tag    string `json:"tag,omitempty"`
	// Tags to point at Manifest (PutManifest).
	Tags     []string  `json:"tags,omitempty"`
	Manifest *Manifest `json:"manifest,omitempty"`
	// IfTag makes a PutManifest conditional on the current target of its
	// tags: each must point at IfTag, or be absent when IfTag is "-" (the
	// compare-and-swap behind If-Match / If-None-Match on a manifest PUT).
	IfTag string `json:"ifTag,omitempty"`
	// AllowSparse lets a manifest reference blobs and children that are not
	// in the repository (a node started with --allow-sparse).
	AllowSparse bool `json:"allowSparse,omitempty"`
	// From is the source repository of a mount; empty means any repository.
	From   string  `json:"from,omitempty"`
	Upload *Upload `json:"upload,omitempty"`
	// ExpectOffset is the session offset an UpdateUpload or CompleteUpload
	// was computed against.
	ExpectOffset int64 `json:"expectOffset,omitempty"`
	// Blob is the index entry a CompleteUpload creates.
	Blob *Blob `json:"blob,omitempty"`
	// IdleSince, on a CancelUpload, makes it an expiry: it applies only if
	// the session was last updated at or before this time (leader clock,
	// unix nanoseconds), so a session a client just advanced survives.
	IdleSince int64 `json:"idleSince,omitempty"`
	// Member is the node a SetMember or RemoveMember is about.
	Member *Member `json:"member,omitempty"`
}

// Encode returns the log form: the type byte, uvarint(len(JSON)), the
// command as JSON without the manifest's bytes, then those bytes raw (so a
// 4 MiB manifest is neither base64-encoded nor scanned as JSON on every
// node that applies it).
func (c *Command) Encode() ([]byte, error) {
	body := *c
	var raw []byte
	if c.Manifest != nil {
		m := *c.Manifest
		raw, m.Raw = m.Raw, nil
		body.Manifest = &m
	}
	js, err := json.Marshal(&body)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", c.Type, err)
	}
	out := make([]byte, 0, 1+binary.MaxVarintLen64+len(js)+len(raw))
	out = append(out, byte(c.Type))
	out = binary.AppendUvarint(out, uint64(len(js)))
	out = append(out, js...)
	return append(out, raw...), nil
}

// DecodeCommand parses the log form. Unknown types are an error. The
// manifest bytes of the result alias b.
func DecodeCommand(b []byte) (*Command, error) {
	if len(b) < 1 {
		return nil, ErrInvalidCommand.WithDetail("empty command")
	}
	t := CommandType(b[0])
	if t < CmdPutManifest || t > maxCommandType {
		return nil, ErrInvalidCommand.WithDetail(fmt.Sprintf("unknown command type %d", b[0]))
	}
	n, k := binary.Uvarint(b[1:])
	if k <= 0 || n > uint64(len(b)-1-k) {
		return nil, ErrInvalidCommand.WithDetail("bad length")
	}
	js, raw := b[1+k:1+k+int(n)], b[1+k+int(n):]
	c := &Command{}
	if err := json.Unmarshal(js, c); err != nil {
		return nil, ErrInvalidCommand.WithDetail(err.Error())
	}
	c.Type = t
	if len(raw) > 0 {
		if c.Manifest == nil {
			return nil, ErrInvalidCommand.WithDetail("trailing bytes without a manifest")
		}
		c.Manifest.Raw = raw
	}
	return c, nil
}

// Result is what applying a command answered. It crosses nodes when a
// follower forwards a write, so errors travel as Code and Detail.
type Result struct {
	Index  uint64 `json:"index"`
	Code   Code   `json:"code,omitempty"`
	Detail string `json:"detail,omitempty"`
	// Blob is the index entry in force after CompleteUpload or MountBlob;
	// Deduplicated says the digest was already indexed under another key, so
	// the uploaded bytes are garbage for the caller to delete.
	Blob         *Blob `json:"blob,omitempty"`
	Deduplicated bool  `json:"deduplicated,omitempty"`
}

// Err returns the result's error, or nil.
func (r *Result) Err() error { return ErrorFor(r.Code, r.Detail) }
