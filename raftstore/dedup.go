package raftstore

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"time"

	"github.com/flotilla/flotilla/meta"
	bolt "go.etcd.io/bbolt"
)

// Commands with an ID are applied at most once. A node that forwarded a
// write and lost track of it (the leader changed, the connection dropped)
// sends the same command again; if the first copy was committed after all,
// the state machine answers its result instead of applying it twice (a
// conditional tag update or an upload step would otherwise fail, or worse,
// apply against state it already changed).
//
// IDs are remembered for commandMemory of leader time, long beyond any
// resend (bounded by the hold timeout), and forgotten deterministically:
// each command prunes at most prunePerCommand entries older than that,
// measured by its own leader-stamped time.
const (
	commandMemory   = 2 * time.Minute
	prunePerCommand = 64
)

func applyOnce(tx *bolt.Tx, c *meta.Command) (*meta.Result, error) {
	if c.ID == "" {
		return apply(tx, c)
	}
	ids := tx.Bucket(bucketCommands)
	if v := ids.Get([]byte(c.ID)); v != nil {
		if len(v) < 8 {
			return nil, fmt.Errorf("command record %q: too short", c.ID)
		}
		var r meta.Result
		if len(v) > 8 {
			if err := json.Unmarshal(v[8:], &r); err != nil {
				return nil, fmt.Errorf("command record %q: %w", c.ID, err)
			}
		}
		return &r, nil
	}
	res, err := apply(tx, c)
	if err != nil {
		return nil, err
	}
	at := u64(c.Time)
	rec := bytes.Clone(at)
	if res.Code != meta.CodeOK || res.Blob != nil || res.Deduplicated || res.Detail != "" {
		// A plain success is the time alone.
		b, err := json.Marshal(res)
		if err != nil {
			return nil, err
		}
		rec = append(rec, b...)
	}
	if err := ids.Put([]byte(c.ID), rec); err != nil {
		return nil, err
	}
	if err := tx.Bucket(bucketCmdTimes).Put(append(bytes.Clone(at), c.ID...), nil); err != nil {
		return nil, err
	}
	return res, forgetCommands(tx, c.Time-int64(commandMemory))
}

// forgetCommands drops up to prunePerCommand IDs applied before cutoff.
func forgetCommands(tx *bolt.Tx, cutoff int64) error {
	ids := tx.Bucket(bucketCommands)
	c := tx.Bucket(bucketCmdTimes).Cursor()
	k, _ := c.First()
	for n := 0; n < prunePerCommand && k != nil; n++ {
		if len(k) < 8 || int64(binary.BigEndian.Uint64(k[:8])) >= cutoff {
			return nil
		}
		if err := ids.Delete(bytes.Clone(k[8:])); err != nil {
			return err
		}
		if err := c.Delete(); err != nil {
			return err
		}
		k, _ = c.First()
	}
	return nil
}
