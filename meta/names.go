package meta

import (
	"crypto/sha256"
	"crypto/sha512"
	"regexp"

	"github.com/opencontainers/go-digest"
)

// The referenced hash implementations register sha256 and sha512 with
// go-digest's algorithm table (crypto.RegisterHash runs in their package
// initialisation), so Algorithm.Available reports them.
var _, _ = sha256.New, sha512.New

var (
	repoPattern = regexp.MustCompile(`^[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*$`)
	tagPattern  = regexp.MustCompile(`^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$`)
)

// MaxRepoNameLength bounds a repository name, as Distribution does.
const MaxRepoNameLength = 255

// ValidRepo reports whether name is a repository name the spec allows.
func ValidRepo(name string) bool {
	return len(name) > 0 && len(name) <= MaxRepoNameLength && repoPattern.MatchString(name)
}

// ValidTag reports whether tag is a tag the spec allows.
func ValidTag(tag string) bool { return tagPattern.MatchString(tag) }

// ParseDigest parses and validates a digest whose algorithm this registry
// can compute (sha256, sha512).
func ParseDigest(s string) (digest.Digest, error) {
	d, err := digest.Parse(s)
	if err != nil {
		return "", err
	}
	if d.Algorithm() != digest.SHA256 && d.Algorithm() != digest.SHA512 {
		return "", digest.ErrDigestUnsupported
	}
	return d, nil
}
