package raftstore

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"

	"github.com/flotilla/flotilla/meta"
	bolt "go.etcd.io/bbolt"
)

// apply runs one command against a write transaction. It is deterministic:
// its only inputs are the command (time included) and the state in tx. A
// domain error (blob unknown, offset mismatch) is returned in the Result and
// leaves tx unchanged; a returned error means the state could not be written
// and aborts the whole batch.
func apply(tx *bolt.Tx, c *meta.Command) (*meta.Result, error) {
	a := applier{tx: tx, c: c}
	var err error
	res := &meta.Result{}
	switch c.Type {
	case meta.CmdPutManifest:
		err = a.putManifest()
	case meta.CmdDeleteManifest:
		err = a.deleteManifest()
	case meta.CmdDeleteTag:
		err = a.deleteTag()
	case meta.CmdMountBlob:
		res.Blob, err = a.mountBlob()
	case meta.CmdUnlinkBlob:
		err = a.unlinkBlob()
	case meta.CmdStartUpload:
		err = a.startUpload()
	case meta.CmdUpdateUpload:
		err = a.updateUpload()
	case meta.CmdCompleteUpload:
		res.Blob, res.Deduplicated, err = a.completeUpload()
	case meta.CmdCancelUpload:
		err = a.cancelUpload()
	case meta.CmdNoop:
	case meta.CmdSetMember:
		err = a.setMember()
	case meta.CmdRemoveMember:
		err = a.removeMember()
	default:
		err = meta.ErrInvalidCommand.WithDetail(c.Type.String())
	}
	if ce, ok := asCodeError(err); ok {
		return &meta.Result{Code: ce.Code, Detail: ce.Detail}, nil
	}
	if err != nil {
		return nil, err
	}
	return res, nil
}

func asCodeError(err error) (*meta.CodeError, bool) {
	ce, ok := err.(*meta.CodeError)
	return ce, ok
}

type applier struct {
	tx *bolt.Tx
	c  *meta.Command
}

func (a applier) b(name []byte) *bolt.Bucket { return a.tx.Bucket(name) }

func putJSON(b *bolt.Bucket, k []byte, v any) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %s: %w", b, err)
	}
	return b.Put(k, raw)
}

func getJSON(b *bolt.Bucket, k []byte, v any) (bool, error) {
	raw := b.Get(k)
	if raw == nil {
		return false, nil
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return false, fmt.Errorf("decode %q: %w", k, err)
	}
	return true, nil
}

func u64(v int64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(v))
	return b[:]
}

func (a applier) validRepo() error {
	if !meta.ValidRepo(a.c.Repo) {
		return meta.ErrNameUnknown.WithDetail(a.c.Repo)
	}
	return nil
}

func (a applier) ensureRepo(repo string) error {
	b := a.b(bucketRepos)
	if b.Get([]byte(repo)) != nil {
		return nil
	}
	return b.Put([]byte(repo), u64(a.c.Time))
}

func (a applier) linked(repo, dgst string) bool {
	return a.b(bucketLinks).Get(key(repo, dgst)) != nil
}

func (a applier) putManifest() error {
	m := a.c.Manifest
	if err := a.validRepo(); err != nil {
		return err
	}
	if m == nil || m.Digest == "" {
		return meta.ErrInvalidCommand.WithDetail("manifest missing")
	}
	for _, t := range a.c.Tags {
		if !meta.ValidTag(t) {
			return meta.ErrInvalidCommand.WithDetail("invalid tag " + t)
		}
	}
	repo := a.c.Repo
	if a.c.IfTag != "" {
		for _, t := range a.c.Tags {
			var cur tagRecord
			found, err := getJSON(a.b(bucketTags), key(repo, t), &cur)
			if err != nil {
				return err
			}
			switch {
			case a.c.IfTag == "-" && found:
				return meta.ErrTagConflict.WithDetail(fmt.Sprintf("tag %s exists (%s)", t, cur.Digest))
			case a.c.IfTag != "-" && (!found || cur.Digest != a.c.IfTag):
				return meta.ErrTagConflict.WithDetail(fmt.Sprintf("tag %s is at %q, not %s", t, cur.Digest, a.c.IfTag))
			}
		}
	}
	if !a.c.AllowSparse {
		for _, d := range m.Blobs {
			if !a.linked(repo, d) {
				return meta.ErrManifestBlobUnknown.WithDetail(d)
			}
		}
		for _, d := range m.Children {
			if a.b(bucketManifests).Get(key(repo, d)) == nil {
				return meta.ErrManifestUnknown.WithDetail(d)
			}
		}
	}
	if err := a.ensureRepo(repo); err != nil {
		return err
	}
	mk := key(repo, m.Digest)
	if existing := a.b(bucketManifests).Get(mk); existing == nil {
		stored := *m
		stored.Created = a.c.Time
		rec, err := encodeManifest(&stored)
		if err != nil {
			return err
		}
		if err := a.b(bucketManifests).Put(mk, rec); err != nil {
			return err
		}
		if m.Subject != "" {
			d := meta.Descriptor{MediaType: m.MediaType, Digest: m.Digest, Size: m.Size(),
				ArtifactType: m.ArtifactType, Annotations: m.Annotations}
			if err := putJSON(a.b(bucketReferrers), key(repo, m.Subject, m.Digest), &d); err != nil {
				return err
			}
		}
	}
	for _, t := range a.c.Tags {
		if err := putJSON(a.b(bucketTags), key(repo, t), &tagRecord{Digest: m.Digest, Updated: a.c.Time}); err != nil {
			return err
		}
	}
	return nil
}

func (a applier) deleteManifest() error {
	repo, dgst := a.c.Repo, a.c.Digest
	m, err := getManifest(a.b(bucketManifests), key(repo, dgst))
	if err != nil {
		return err
	}
	if m == nil {
		return meta.ErrManifestUnknown.WithDetail(dgst)
	}
	if err := a.b(bucketManifests).Delete(key(repo, dgst)); err != nil {
		return err
	}
	if m.Subject != "" {
		if err := a.b(bucketReferrers).Delete(key(repo, m.Subject, dgst)); err != nil {
			return err
		}
	}
	// Tags naming this manifest go with it.
	tags := a.b(bucketTags)
	p := prefix(repo)
	var doomed [][]byte
	cur := tags.Cursor()
	for k, v := cur.Seek(p); k != nil && bytes.HasPrefix(k, p); k, v = cur.Next() {
		var t tagRecord
		if err := json.Unmarshal(v, &t); err != nil {
			return fmt.Errorf("decode tag %q: %w", k, err)
		}
		if t.Digest == dgst {
			doomed = append(doomed, bytes.Clone(k))
		}
	}
	for _, k := range doomed {
		if err := tags.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

func (a applier) deleteTag() error {
	k := key(a.c.Repo, a.c.Tag)
	if a.b(bucketTags).Get(k) == nil {
		return meta.ErrManifestUnknown.WithDetail(a.c.Tag)
	}
	return a.b(bucketTags).Delete(k)
}

func (a applier) mountBlob() (*meta.Blob, error) {
	if err := a.validRepo(); err != nil {
		return nil, err
	}
	var blob meta.Blob
	found, err := getJSON(a.b(bucketBlobs), []byte(a.c.Digest), &blob)
	if err != nil {
		return nil, err
	}
	if !found || (a.c.From != "" && !a.linked(a.c.From, a.c.Digest)) {
		return nil, meta.ErrBlobUnknown.WithDetail(a.c.Digest)
	}
	if err := a.link(a.c.Repo, a.c.Digest); err != nil {
		return nil, err
	}
	return &blob, nil
}

func (a applier) link(repo, dgst string) error {
	if err := a.ensureRepo(repo); err != nil {
		return err
	}
	if a.linked(repo, dgst) {
		return nil
	}
	return a.b(bucketLinks).Put(key(repo, dgst), u64(a.c.Time))
}

func (a applier) unlinkBlob() error {
	k := key(a.c.Repo, a.c.Digest)
	if a.b(bucketLinks).Get(k) == nil {
		return meta.ErrBlobUnknown.WithDetail(a.c.Digest)
	}
	return a.b(bucketLinks).Delete(k)
}

func (a applier) startUpload() error {
	u := a.c.Upload
	if err := a.validRepo(); err != nil {
		return err
	}
	if u == nil || u.ID == "" || u.Repo != a.c.Repo {
		return meta.ErrInvalidCommand.WithDetail("upload missing")
	}
	if a.b(bucketUploads).Get([]byte(u.ID)) != nil {
		return meta.ErrInvalidCommand.WithDetail("upload exists")
	}
	s := *u
	s.Started, s.Updated = a.c.Time, a.c.Time
	return putJSON(a.b(bucketUploads), []byte(u.ID), &s)
}

// session loads the upload the command names and checks that it belongs to
// the command's repository and stands at the expected offset.
func (a applier) session(id string) (*meta.Upload, error) {
	var s meta.Upload
	found, err := getJSON(a.b(bucketUploads), []byte(id), &s)
	if err != nil {
		return nil, err
	}
	if !found || s.Repo != a.c.Repo {
		return nil, meta.ErrUploadUnknown.WithDetail(id)
	}
	if s.Offset != a.c.ExpectOffset {
		return nil, meta.ErrRangeInvalid.WithDetail(fmt.Sprintf("session at %d, request computed at %d", s.Offset, a.c.ExpectOffset))
	}
	return &s, nil
}

func (a applier) updateUpload() error {
	u := a.c.Upload
	if u == nil {
		return meta.ErrInvalidCommand.WithDetail("upload missing")
	}
	s, err := a.session(u.ID)
	if err != nil {
		return err
	}
	next := *u
	next.Repo, next.Started, next.Updated = s.Repo, s.Started, a.c.Time
	return putJSON(a.b(bucketUploads), []byte(u.ID), &next)
}

func (a applier) completeUpload() (*meta.Blob, bool, error) {
	u, blob := a.c.Upload, a.c.Blob
	if u == nil || blob == nil || blob.Digest == "" || blob.Key == "" {
		return nil, false, meta.ErrInvalidCommand.WithDetail("upload or blob missing")
	}
	if _, err := a.session(u.ID); err != nil {
		return nil, false, err
	}
	if err := a.b(bucketUploads).Delete([]byte(u.ID)); err != nil {
		return nil, false, err
	}
	var existing meta.Blob
	found, err := getJSON(a.b(bucketBlobs), []byte(blob.Digest), &existing)
	if err != nil {
		return nil, false, err
	}
	dedup := found
	if !found {
		existing = *blob
		existing.Created = a.c.Time
		if err := putJSON(a.b(bucketBlobs), []byte(blob.Digest), &existing); err != nil {
			return nil, false, err
		}
	}
	if err := a.link(a.c.Repo, blob.Digest); err != nil {
		return nil, false, err
	}
	return &existing, dedup, nil
}

func (a applier) cancelUpload() error {
	id := a.c.Upload
	if id == nil {
		return meta.ErrInvalidCommand.WithDetail("upload missing")
	}
	var s meta.Upload
	found, err := getJSON(a.b(bucketUploads), []byte(id.ID), &s)
	if err != nil {
		return err
	}
	if !found || s.Repo != a.c.Repo {
		return meta.ErrUploadUnknown.WithDetail(id.ID)
	}
	if a.c.IdleSince != 0 && s.Updated > a.c.IdleSince {
		return meta.ErrRangeInvalid.WithDetail("upload was updated since it was found idle")
	}
	return a.b(bucketUploads).Delete([]byte(id.ID))
}

func (a applier) setMember() error {
	m := a.c.Member
	if m == nil || m.ID == "" {
		return meta.ErrInvalidCommand.WithDetail("member missing")
	}
	return putJSON(a.b(bucketMembers), []byte(m.ID), m)
}

func (a applier) removeMember() error {
	if a.c.Member == nil || a.c.Member.ID == "" {
		return meta.ErrInvalidCommand.WithDetail("member missing")
	}
	return a.b(bucketMembers).Delete([]byte(a.c.Member.ID))
}
