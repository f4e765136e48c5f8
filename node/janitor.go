package node

import (
	"context"
	"errors"
	"time"

	"github.com/flotilla/flotilla/meta"
)

// expireUploads runs on every node but acts only on the leader: it closes
// upload sessions idle for longer than UploadExpiry and aborts what their
// blob store staged (multipart parts, tail objects, partial files).
func (n *Node) expireUploads(ctx context.Context) {
	tick := time.NewTicker(n.cfg.JanitorInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if !n.store.IsLeader() {
			continue
		}
		if err := n.expireOnce(ctx, time.Now()); err != nil && ctx.Err() == nil {
			n.logger.Warn("upload expiry pass failed", "err", err)
		}
	}
}

func (n *Node) expireOnce(ctx context.Context, now time.Time) error {
	cutoff := now.Add(-n.cfg.UploadExpiry).UnixNano()
	idle, err := n.store.IdleUploads(cutoff, 1000)
	if err != nil {
		return err
	}
	for _, u := range idle {
		res, err := n.store.Apply(ctx, &meta.Command{Type: meta.CmdCancelUpload, Repo: u.Repo,
			Upload: &meta.Upload{ID: u.ID}, IdleSince: cutoff})
		if err != nil {
			return err
		}
		if err := res.Err(); err != nil {
			if errors.Is(err, meta.ErrRangeInvalid) || errors.Is(err, meta.ErrUploadUnknown) {
				continue // advanced or finished meanwhile
			}
			return err
		}
		if err := n.blobs.Abort(ctx, meta.BlobUpload{Size: u.Offset, State: u.Driver}); err != nil {
			n.logger.Warn("aborting expired upload storage failed", "upload", u.ID, "err", err)
			continue
		}
		n.logger.Info("expired idle upload", "upload", u.ID, "repo", u.Repo, "offset", u.Offset)
	}
	return nil
}
