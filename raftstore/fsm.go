package raftstore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/flotilla/flotilla/meta"
	"github.com/hashicorp/raft"
	bolt "go.etcd.io/bbolt"
)

// ErrFormat means the state machine file was written by an incompatible
// version of Flotilla.
var ErrFormat = errors.New("raftstore: unsupported state format version")

// fsm is the registry state machine: a bbolt file that holds every record
// and the index of the last log entry applied to it. It survives restarts
// (raft is told not to restore a snapshot on start), and entries at or below
// the stored index are skipped when raft replays its log.
type fsm struct {
	path   string
	logger *slog.Logger

	mu sync.RWMutex // guards db against Restore swapping it
	db *bolt.DB

	applied *indexWaiter
	// lastWrite is the index of the last applied entry that changed
	// registry state (not a no-op). Conservatively the whole applied index
	// after open or restore. Read indexes point here, so the no-ops the
	// leader appends to spread its commit index never make readers wait.
	lastWrite atomic.Uint64
	// visible is at least the index of the last state-changing entry in
	// any committed transaction: it is raised before the transaction
	// commits, so a reader that loads it after reading has a bound on the
	// state it saw (read leases wait until it is stable).
	visible atomic.Uint64
	// onApplied, if set, is called after the applied index moves.
	onApplied func()
	// stop is closed when the store shuts down (ends write retries).
	stop chan struct{}
	// failing is set while a state machine write keeps failing;
	// onWriteFailure is called on each failure (the store hands leadership
	// away: a leader that cannot apply would stall the whole cluster).
	failing        atomic.Bool
	onWriteFailure func()
}

func openFSM(path string, logger *slog.Logger) (*fsm, error) {
	db, err := openDB(path)
	if err != nil {
		return nil, err
	}
	f := &fsm{path: path, logger: logger, db: db, applied: newIndexWaiter(), stop: make(chan struct{})}
	f.applied.set(f.storedIndex())
	f.lastWrite.Store(f.storedIndex())
	f.visible.Store(f.storedIndex())
	return f, nil
}

func openDB(path string) (*bolt.DB, error) {
	db, err := bolt.Open(path, 0o640, &bolt.Options{NoFreelistSync: true, FreelistType: bolt.FreelistMapType})
	if err != nil {
		return nil, fmt.Errorf("open state machine %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, name := range allBuckets {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		m := tx.Bucket(bucketMeta)
		if v := m.Get(keyFormat); v != nil {
			if got := binary.BigEndian.Uint64(v); got != formatVersion {
				return fmt.Errorf("%w: file has %d, this build reads %d", ErrFormat, got, formatVersion)
			}
			return nil
		}
		return m.Put(keyFormat, u64(formatVersion))
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("init state machine %s: %w", path, err)
	}
	return db, nil
}

func (f *fsm) storedIndex() uint64 {
	var idx uint64
	_ = f.view(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketMeta).Get(keyApplied); v != nil {
			idx = binary.BigEndian.Uint64(v)
		}
		return nil
	})
	return idx
}

// view runs fn in a read transaction of the current database.
func (f *fsm) view(fn func(tx *bolt.Tx) error) error {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.db.View(fn)
}

// Apply implements raft.FSM for a single entry.
func (f *fsm) Apply(l *raft.Log) any {
	return f.ApplyBatch([]*raft.Log{l})[0]
}

// ApplyBatch applies a run of committed entries in one bbolt transaction,
// so one fsync covers the batch.
//
// If the transaction cannot be written (a full disk, an I/O error), nothing
// of it is kept and it is retried with backoff until it succeeds: the node
// stops applying (its reads cannot get fresher, so it answers 503 rather
// than stale data) but neither diverges nor crashes, and it carries on by
// itself once the disk has room. If the store closes meanwhile, the entries
// are answered with an error and left unapplied; the recorded applied index
// did not move, so they are applied again when raft replays its log.
func (f *fsm) ApplyBatch(logs []*raft.Log) []any {
	out := make([]any, len(logs))
	if len(logs) == 0 {
		return out
	}
	backoff := 10 * time.Millisecond
	for {
		last, lastWrite, err := f.applyBatchOnce(logs, out)
		if err == nil {
			if lastWrite > 0 {
				f.lastWrite.Store(lastWrite)
			}
			if f.failing.Swap(false) {
				f.logger.Info("state machine writes succeed again", "index", last)
			}
			f.applied.set(last)
			if f.onApplied != nil {
				f.onApplied()
			}
			return out
		}
		f.failing.Store(true)
		f.logger.Error("state machine write failed; retrying", "first_index", logs[0].Index, "entries", len(logs), "err", err)
		if f.onWriteFailure != nil {
			f.onWriteFailure()
		}
		select {
		case <-f.stop:
			for i := range out {
				out[i] = &meta.Result{Index: logs[i].Index, Code: meta.CodeInvalidCommand, Detail: "not applied: " + err.Error()}
			}
			return out
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 2*time.Second)
	}
}

func (f *fsm) applyBatchOnce(logs []*raft.Log, out []any) (uint64, uint64, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	var last, lastWrite uint64
	err := f.db.Update(func(tx *bolt.Tx) error {
		stored := appliedIn(tx)
		for i, l := range logs {
			last = l.Index
			if l.Type != raft.LogCommand {
				continue
			}
			if l.Index <= stored {
				// Already in the file: a replay after restart.
				out[i] = &meta.Result{Index: l.Index}
				continue
			}
			c, err := meta.DecodeCommand(l.Data)
			if err != nil {
				f.logger.Error("undecodable command in log", "index", l.Index, "err", err)
				out[i] = &meta.Result{Index: l.Index, Code: meta.CodeInvalidCommand, Detail: err.Error()}
				continue
			}
			res, err := applyOnce(tx, c)
			if err != nil {
				return fmt.Errorf("apply index %d (%s): %w", l.Index, c.Type, err)
			}
			res.Index = l.Index
			out[i] = res
			if c.Type != meta.CmdNoop {
				lastWrite = l.Index
			}
		}
		if last <= stored {
			return nil
		}
		if lastWrite > f.visible.Load() {
			f.visible.Store(lastWrite) // before the commit makes it readable
		}
		return tx.Bucket(bucketMeta).Put(keyApplied, u64(int64(last)))
	})
	return last, lastWrite, err
}

// Snapshot opens a read transaction (fast); Persist streams it out while
// Apply continues.
func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.RLock()
	tx, err := f.db.Begin(false)
	f.mu.RUnlock()
	if err != nil {
		return nil, fmt.Errorf("snapshot: %w", err)
	}
	return &fsmSnapshot{tx: tx}, nil
}

// Restore replaces the whole state with a snapshot stream.
func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	tmp := f.path + ".restore"
	if err := writeFileSync(tmp, rc); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	// Validate before swapping.
	probe, err := openDB(tmp)
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("restore: %w", err)
	}
	probe.Close()

	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.db.Close(); err != nil {
		return fmt.Errorf("restore: close: %w", err)
	}
	if err := os.Rename(tmp, f.path); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	db, err := openDB(f.path)
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	f.db = db
	var idx uint64
	_ = db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketMeta).Get(keyApplied); v != nil {
			idx = binary.BigEndian.Uint64(v)
		}
		return nil
	})
	f.lastWrite.Store(idx)
	if idx > f.visible.Load() {
		f.visible.Store(idx)
	}
	f.applied.reset(idx)
	if f.onApplied != nil {
		f.onApplied()
	}
	return nil
}

func (f *fsm) close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.db.Close()
}

func writeFileSync(path string, r io.Reader) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return err
	}
	file, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o640)
	if err != nil {
		return err
	}
	if _, err := io.Copy(file, r); err != nil {
		file.Close()
		return err
	}
	if err := file.Sync(); err != nil {
		file.Close()
		return err
	}
	return file.Close()
}

type fsmSnapshot struct {
	tx *bolt.Tx
}

func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if _, err := s.tx.WriteTo(sink); err != nil {
		sink.Cancel()
		return fmt.Errorf("persist snapshot: %w", err)
	}
	return sink.Close()
}

func (s *fsmSnapshot) Release() { _ = s.tx.Rollback() }
