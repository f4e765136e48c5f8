package raftstore

import "strings"

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
