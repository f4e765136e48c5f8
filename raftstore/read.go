package raftstore

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/flotilla/flotilla/meta"
	bolt "go.etcd.io/bbolt"
)

// Local reads of the state machine. They see what this node has applied;
// callers that need more (read-your-writes across nodes) wait for a read
// index first (see Store.ReadIndex and Store.WaitApplied).

// Manifest returns the manifest digest in repo.
func (s *Store) Manifest(repo, digest string) (*meta.Manifest, error) {
	var m *meta.Manifest
	err := s.fsm.view(func(tx *bolt.Tx) error {
		var err error
		m, err = getManifest(tx.Bucket(bucketManifests), key(repo, digest))
		if err == nil && m == nil {
			err = meta.ErrManifestUnknown.WithDetail(digest)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return m, nil
}

// ManifestContent returns what serving manifest digest of repo needs: its
// digest, media type and bytes (the other fields are left empty).
func (s *Store) ManifestContent(repo, digest string) (*meta.Manifest, error) {
	var m *meta.Manifest
	err := s.fsm.view(func(tx *bolt.Tx) error {
		var err error
		m, err = manifestContentIn(tx, repo, digest)
		return err
	})
	return m, err
}

// TaggedManifest is ManifestContent of the manifest tag points at, read in
// one transaction.
func (s *Store) TaggedManifest(repo, tag string) (*meta.Manifest, error) {
	var m *meta.Manifest
	err := s.fsm.view(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketTags).Get(key(repo, tag))
		if v == nil {
			return meta.ErrManifestUnknown.WithDetail(tag)
		}
		dgst, err := tagDigest(v)
		if err != nil {
			return fmt.Errorf("decode tag %s:%s: %w", repo, tag, err)
		}
		m, err = manifestContentIn(tx, repo, dgst)
		return err
	})
	return m, err
}

func manifestContentIn(tx *bolt.Tx, repo, digest string) (*meta.Manifest, error) {
	v := tx.Bucket(bucketManifests).Get(key(repo, digest))
	if v == nil {
		return nil, meta.ErrManifestUnknown.WithDetail(digest)
	}
	m, err := manifestContent(v)
	if err != nil {
		return nil, fmt.Errorf("decode manifest %s@%s: %w", repo, digest, err)
	}
	return m, nil
}

// Tag returns the digest tag points at in repo.
func (s *Store) Tag(repo, tag string) (string, error) {
	var t tagRecord
	err := s.fsm.view(func(tx *bolt.Tx) error {
		found, err := getJSON(tx.Bucket(bucketTags), key(repo, tag), &t)
		if err == nil && !found {
			err = meta.ErrManifestUnknown.WithDetail(tag)
		}
		return err
	})
	return t.Digest, err
}

// RepoExists reports whether anything was ever pushed to repo.
func (s *Store) RepoExists(repo string) bool {
	var ok bool
	_ = s.fsm.view(func(tx *bolt.Tx) error {
		ok = tx.Bucket(bucketRepos).Get([]byte(repo)) != nil
		return nil
	})
	return ok
}

// Tags lists up to n tags of repo after last, in lexical order, and whether
// more follow. n <= 0 means no limit.
func (s *Store) Tags(repo, last string, n int) ([]string, bool, error) {
	var out []string
	more := false
	err := s.fsm.view(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketRepos).Get([]byte(repo)) == nil {
			return meta.ErrNameUnknown.WithDetail(repo)
		}
		p := prefix(repo)
		out, more = scanNames(tx.Bucket(bucketTags).Cursor(), p, last, n)
		return nil
	})
	return out, more, err
}

// Repositories lists up to n repository names after last, and whether more
// follow.
func (s *Store) Repositories(last string, n int) ([]string, bool, error) {
	var out []string
	more := false
	err := s.fsm.view(func(tx *bolt.Tx) error {
		out, more = scanNames(tx.Bucket(bucketRepos).Cursor(), nil, last, n)
		return nil
	})
	return out, more, err
}

// scanNames walks keys under p (in lexical order), strips p, starts after
// last and returns at most n names.
func scanNames(c *bolt.Cursor, p []byte, last string, n int) ([]string, bool) {
	out := []string{}
	start := append(bytes.Clone(p), last...)
	k, _ := c.Seek(start)
	if k != nil && last != "" && bytes.Equal(k, start) {
		k, _ = c.Next()
	}
	for ; k != nil && bytes.HasPrefix(k, p); k, _ = c.Next() {
		if n > 0 && len(out) == n {
			return out, true
		}
		out = append(out, string(k[len(p):]))
	}
	return out, false
}

// Referrers lists the descriptors of manifests in repo whose subject is
// subject, in digest order.
func (s *Store) Referrers(repo, subject string) ([]meta.Descriptor, error) {
	out := []meta.Descriptor{}
	err := s.fsm.view(func(tx *bolt.Tx) error {
		p := prefix(repo, subject)
		c := tx.Bucket(bucketReferrers).Cursor()
		for k, v := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, v = c.Next() {
			var d meta.Descriptor
			if err := json.Unmarshal(v, &d); err != nil {
				return fmt.Errorf("decode referrer %q: %w", strings.ReplaceAll(string(k), sep, "/"), err)
			}
			out = append(out, d)
		}
		return nil
	})
	return out, err
}

// Blob returns the index entry of digest if it is linked into repo.
func (s *Store) Blob(repo, digest string) (*meta.Blob, error) {
	var b meta.Blob
	err := s.fsm.view(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketLinks).Get(key(repo, digest)) == nil {
			return meta.ErrBlobUnknown.WithDetail(digest)
		}
		found, err := getJSON(tx.Bucket(bucketBlobs), []byte(digest), &b)
		if err == nil && !found {
			err = meta.ErrBlobUnknown.WithDetail(digest)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return &b, nil
}

// Upload returns an upload session.
func (s *Store) Upload(id string) (*meta.Upload, error) {
	var u meta.Upload
	err := s.fsm.view(func(tx *bolt.Tx) error {
		found, err := getJSON(tx.Bucket(bucketUploads), []byte(id), &u)
		if err == nil && !found {
			err = meta.ErrUploadUnknown.WithDetail(id)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return &u, nil
}

// Members returns the recorded addresses of every node, by id.
func (s *Store) Members() (map[string]meta.Member, error) {
	out := map[string]meta.Member{}
	err := s.fsm.view(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketMembers).ForEach(func(k, v []byte) error {
			var m meta.Member
			if err := json.Unmarshal(v, &m); err != nil {
				return fmt.Errorf("decode member %q: %w", k, err)
			}
			out[string(k)] = m
			return nil
		})
	})
	return out, err
}

// IdleUploads returns up to limit upload sessions last updated before
// cutoff (unix nanoseconds).
func (s *Store) IdleUploads(cutoff int64, limit int) ([]meta.Upload, error) {
	var out []meta.Upload
	err := s.fsm.view(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketUploads).Cursor()
		for k, v := c.First(); k != nil && len(out) < limit; k, v = c.Next() {
			var u meta.Upload
			if err := json.Unmarshal(v, &u); err != nil {
				return fmt.Errorf("decode upload %q: %w", k, err)
			}
			if u.Updated < cutoff {
				out = append(out, u)
			}
		}
		return nil
	})
	return out, err
}

// StateHash is a digest of the whole registry state (every bucket but the
// bookkeeping in meta) and the applied index it reflects. Nodes that applied
// the same log prefix have the same hash.
func (s *Store) StateHash() (uint64, string, error) {
	var idx uint64
	h := sha256.New()
	err := s.fsm.view(func(tx *bolt.Tx) error {
		idx = appliedIn(tx)
		for _, name := range allBuckets {
			if bytes.Equal(name, bucketMeta) {
				continue
			}
			h.Write(name)
			h.Write([]byte{0})
			err := tx.Bucket(name).ForEach(func(k, v []byte) error {
				var n [8]byte
				binary.BigEndian.PutUint64(n[:], uint64(len(k)))
				h.Write(n[:])
				h.Write(k)
				binary.BigEndian.PutUint64(n[:], uint64(len(v)))
				h.Write(n[:])
				h.Write(v)
				return nil
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
	return idx, hex.EncodeToString(h.Sum(nil)), err
}
