package node

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// DataFormatVersion is the layout version of a data dir. A data dir of
// another version is refused until a migration exists for it.
const DataFormatVersion = 1

// ErrDataFormat: the data dir was written by an incompatible version.
var ErrDataFormat = errors.New("node: unsupported data dir format")

const formatFile = "FORMAT"

// prepareDataDir creates dir if needed and checks or writes its format
// version. It returns the node id stored there, or stores id (or a new one).
func prepareDataDir(dir, id string) (string, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return "", fmt.Errorf("data dir: %w", err)
	}
	p := filepath.Join(dir, formatFile)
	raw, err := os.ReadFile(p)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := writeFileAtomic(p, []byte(fmt.Sprintf("flotilla-data %d\n", DataFormatVersion))); err != nil {
			return "", err
		}
	case err != nil:
		return "", fmt.Errorf("data dir: %w", err)
	default:
		v, ok := strings.CutPrefix(strings.TrimSpace(string(raw)), "flotilla-data ")
		n, perr := strconv.Atoi(v)
		if !ok || perr != nil || n != DataFormatVersion {
			return "", fmt.Errorf("%w: %s says %q, this build uses %d", ErrDataFormat, p, strings.TrimSpace(string(raw)), DataFormatVersion)
		}
	}
	idPath := filepath.Join(dir, "node-id")
	stored, err := os.ReadFile(idPath)
	if err == nil {
		s := strings.TrimSpace(string(stored))
		if id != "" && id != s {
			return "", fmt.Errorf("data dir %s belongs to node %q, not %q", dir, s, id)
		}
		return s, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("data dir: %w", err)
	}
	if id == "" {
		var b [4]byte
		_, _ = rand.Read(b[:])
		host, _ := os.Hostname()
		if host == "" {
			host = "node"
		}
		id = host + "-" + hex.EncodeToString(b[:])
	}
	return id, writeFileAtomic(idPath, []byte(id+"\n"))
}

func writeFileAtomic(p string, data []byte) error {
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, data, 0o640); err != nil {
		return fmt.Errorf("write %s: %w", p, err)
	}
	f, err := os.Open(tmp)
	if err == nil {
		_ = f.Sync()
		f.Close()
	}
	if err := os.Rename(tmp, p); err != nil {
		return fmt.Errorf("write %s: %w", p, err)
	}
	return nil
}
