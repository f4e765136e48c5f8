package raftstore

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/flotilla/flotilla/meta"
	bolt "go.etcd.io/bbolt"
)

// Bucket names. Part of the on-disk format (see formatVersion).
var (
	bucketMeta      = []byte("meta")      // format version, applied index
	bucketRepos     = []byte("repos")     // repo -> created
	bucketTags      = []byte("tags")      // repo \0 tag -> tagRecord
	bucketManifests = []byte("manifests") // repo \0 digest -> meta.Manifest
	bucketReferrers = []byte("referrers") // repo \0 subject \0 digest -> meta.Descriptor
	bucketBlobs     = []byte("blobs")     // digest -> meta.Blob
	bucketLinks     = []byte("links")     // repo \0 digest -> created
	bucketUploads   = []byte("uploads")   // id -> meta.Upload
	bucketMembers   = []byte("members")   // node id -> meta.Member

	allBuckets = [][]byte{bucketMeta, bucketRepos, bucketTags, bucketManifests, bucketReferrers,
		bucketBlobs, bucketLinks, bucketUploads, bucketMembers}

	keyFormat  = []byte("format")
	keyApplied = []byte("applied")
)

// formatVersion is the version of the state machine's bbolt layout. A data
// dir written by another version is refused until a migration exists.
const formatVersion = 1

const sep = "\x00"

func key(parts ...string) []byte { return []byte(strings.Join(parts, sep)) }

// prefix is key(parts...) followed by the separator: every key below it.
func prefix(parts ...string) []byte { return []byte(strings.Join(parts, sep) + sep) }

type tagRecord struct {
	Digest  string `json:"digest"`
	Updated int64  `json:"updated"`
}

// Manifest records are stored as uvarint(len(header)) | header JSON (the
// record without its bytes) | the manifest's raw bytes, so a read copies the
// bytes instead of base64-decoding them from JSON.
func encodeManifest(m *meta.Manifest) ([]byte, error) {
	h := *m
	h.Raw = nil
	hdr, err := json.Marshal(&h)
	if err != nil {
		return nil, err
	}
	out := binary.AppendUvarint(make([]byte, 0, len(hdr)+len(m.Raw)+binary.MaxVarintLen64), uint64(len(hdr)))
	out = append(out, hdr...)
	return append(out, m.Raw...), nil
}

func decodeManifest(b []byte, m *meta.Manifest) error {
	n, k := binary.Uvarint(b)
	if k <= 0 || uint64(len(b)-k) < n {
		return errors.New("manifest record: bad header length")
	}
	if err := json.Unmarshal(b[k:k+int(n)], m); err != nil {
		return fmt.Errorf("manifest record: %w", err)
	}
	m.Raw = bytes.Clone(b[k+int(n):])
	return nil
}

func getManifest(b *bolt.Bucket, k []byte) (*meta.Manifest, error) {
	v := b.Get(k)
	if v == nil {
		return nil, nil
	}
	var m meta.Manifest
	if err := decodeManifest(v, &m); err != nil {
		return nil, fmt.Errorf("decode %q: %w", k, err)
	}
	return &m, nil
}
