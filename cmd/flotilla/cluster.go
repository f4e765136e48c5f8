package main

import (
	"context"
	"encoding/json"
	"os"
	"time"

	"github.com/flotilla/flotilla/node"
	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

func newClusterCommand() *cobra.Command {
	var addr string
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "cluster",
		Short: "Inspect and change cluster membership through any node's gRPC address",
	}
	cmd.PersistentFlags().StringVar(&addr, "addr", "127.0.0.1:7001", "gRPC address of any cluster member")
	cmd.PersistentFlags().DurationVar(&timeout, "timeout", 30*time.Second, "how long to wait for an answer")
	withClient := func(fn func(ctx context.Context, c *node.Client) error) error {
		c, err := node.Dial(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return err
		}
		defer c.Close()
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		return fn(ctx, c)
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "status",
		Short: "Print the cluster as this node sees it (JSON, as GET /cluster/status)",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			return withClient(func(ctx context.Context, c *node.Client) error {
				st, err := c.Status(ctx)
				if err != nil {
					return err
				}
				enc := json.NewEncoder(os.Stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(st)
			})
		},
	}, &cobra.Command{
		Use:   "remove NODE_ID",
		Short: "Remove a node from the cluster",
		Args:  cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			return withClient(func(ctx context.Context, c *node.Client) error { return c.Remove(ctx, args[0]) })
		},
	}, &cobra.Command{
		Use:   "transfer-leadership [NODE_ID]",
		Short: "Hand leadership to NODE_ID, or to any other voter",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			id := ""
			if len(args) == 1 {
				id = args[0]
			}
			return withClient(func(ctx context.Context, c *node.Client) error { return c.TransferLeadership(ctx, id) })
		},
	})
	return cmd
}
