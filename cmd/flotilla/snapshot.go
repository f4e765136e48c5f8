package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/flotilla/flotilla/raftstore"
	"github.com/spf13/cobra"
)

func newSnapshotCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "snapshot",
		Short: "Back up registry metadata, or seed a new cluster from a backup",
	}
	var url string
	var timeout time.Duration
	save := &cobra.Command{
		Use:   "save FILE",
		Short: "Write a consistent copy of all metadata (from any node) to FILE",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, url+"/cluster/snapshot", nil)
			if err != nil {
				return err
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
				return fmt.Errorf("snapshot: %s: %s", resp.Status, msg)
			}
			tmp := args[0] + ".partial"
			f, err := os.Create(tmp)
			if err != nil {
				return err
			}
			n, err := io.Copy(f, resp.Body)
			if err == nil {
				err = f.Sync()
			}
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				os.Remove(tmp)
				return fmt.Errorf("snapshot: %w", err)
			}
			if err := os.Rename(tmp, args[0]); err != nil {
				return err
			}
			fmt.Fprintf(os.Stderr, "saved %d bytes to %s\n", n, args[0])
			return nil
		},
	}
	save.Flags().StringVar(&url, "url", "http://127.0.0.1:5000", "HTTP base URL of any node")
	save.Flags().DurationVar(&timeout, "timeout", 10*time.Minute, "how long the transfer may take")

	var dataDir string
	restore := &cobra.Command{
		Use:   "restore FILE",
		Short: "Seed an empty data dir from a backup; start that node without --join to bootstrap a new cluster from it",
		Args:  cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			f, err := os.Open(args[0])
			if err != nil {
				return err
			}
			defer f.Close()
			if err := raftstore.RestoreBackup(filepath.Join(dataDir, "raft"), f); err != nil {
				return err
			}
			fmt.Fprintf(os.Stderr, "restored %s into %s; now run: flotilla serve --data-dir %s (no --join)\n", args[0], dataDir, dataDir)
			return nil
		},
	}
	restore.Flags().StringVar(&dataDir, "data-dir", "./flotilla-data", "data dir of the node to seed (must hold no raft state)")
	cmd.AddCommand(save, restore)
	return cmd
}
