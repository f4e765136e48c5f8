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
	bucketMeta      = []byte("meta")          // format version, applied index
	bucketRepos     = []byte("repos")         // repo -> created
	bucketTags      = []byte("tags")          // repo \0 tag -> tagRecord
	bucketManifests = []byte("manifests")     // repo \0 digest -> meta.Manifest
	bucketReferrers = []byte("referrers")     // repo \0 subject \0 digest -> meta.Descriptor
	bucketBlobs     = []byte("blobs")         // digest -> meta.Blob
	bucketLinks     = []byte("links")         // repo \0 digest -> created
	bucketUploads   = []byte("uploads")       // id -> meta.Upload
	bucketMembers   = []byte("members")       // node id -> meta.Member
	bucketCommands  = []byte("commands")      // command id -> applied time | meta.Result (see dedup.go)
	bucketCmdTimes  = []byte("command-times") // applied time | command id -> nothing

	allBuckets = [][]byte{bucketMeta, bucketRepos, bucketTags, bucketManifests, bucketReferrers,
		bucketBlobs, bucketLinks, bucketUploads, bucketMembers, bucketCommands, bucketCmdTimes}

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

// leadingString reads the first member of a JSON object if it is the
// string field name without escapes, as encoding/json writes the first
// field of tagRecord and of a manifest header; ok is false otherwise (the
// caller then decodes the whole record). It returns the value and what
// follows its closing quote.
func leadingString(b []byte, name string) (string, []byte, bool) {
	return memberString(b, `{"`+name+`":"`)
}

// memberString reads a string value that b starts with after prefix.
func memberString(b []byte, prefix string) (string, []byte, bool) {
	if !bytes.HasPrefix(b, []byte(prefix)) {
		return "", nil, false
	}
	b = b[len(prefix):]
	end := bytes.IndexByte(b, '"')
	if end < 0 || bytes.IndexByte(b[:end], '\\') >= 0 {
		return "", nil, false
	}
	return string(b[:end]), b[end+1:], true
}

// manifestContent decodes what serving a manifest needs (digest, media
// type, bytes) without decoding the rest of the header in the common case.
func manifestContent(v []byte) (*meta.Manifest, error) {
	n, k := binary.Uvarint(v)
	if k <= 0 || uint64(len(v)-k) < n {
		return nil, errors.New("manifest record: bad header length")
	}
	hdr := v[k : k+int(n)]
	if dgst, rest, ok := leadingString(hdr, "digest"); ok {
		if mt, _, ok := memberString(rest, `,"mediaType":"`); ok {
			return &meta.Manifest{Digest: dgst, MediaType: mt, Raw: bytes.Clone(v[k+int(n):])}, nil
		}
	}
	var m meta.Manifest
	if err := decodeManifest(v, &m); err != nil {
		return nil, err
	}
	return &meta.Manifest{Digest: m.Digest, MediaType: m.MediaType, Raw: m.Raw}, nil
}

// tagDigest returns the digest of a tag record.
func tagDigest(v []byte) (string, error) {
	if d, _, ok := leadingString(v, "digest"); ok {
		return d, nil
	}
	var t tagRecord
	if err := json.Unmarshal(v, &t); err != nil {
		return "", err
	}
	return t.Digest, nil
}
