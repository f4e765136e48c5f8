package node

import (
	"errors"
	"fmt"
	"testing"

	"github.com/flotilla/flotilla/raftstore"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// A forwarded write is sent again only when it certainly never reached the
// log, or under its command id (applied at most once): a plain duplicate
// could apply a conditional command twice.
func TestRetryable(t *testing.T) {
	unknown := fmt.Errorf("%w: %v", raftstore.ErrOutcomeUnknown, status.Error(codes.Canceled, "cancelled"))
	cases := []struct {
		name string
		err  error
		want bool
	}{
		{"not leader", raftstore.ErrNotLeader, true},
		{"no leader", errNoLeader, true},
		{"refused by the leader", status.Error(codes.FailedPrecondition, "not the leader"), true},
		{"leader unreachable", status.Error(codes.Unavailable, "connection refused"), true},
		{"leader changed, nothing sent", fmt.Errorf("%w: %v", errLeaderChanged, errNoLeader), true},
		{"outcome unknown", unknown, false},
		// Under its command id, the state machine applies it at most once.
		{"resend under the same id", fmt.Errorf("%w: %v", errResend, unknown), true},
		{"resend, leader changed", fmt.Errorf("%w: %w", errLeaderChanged, fmt.Errorf("%w: %v", errResend, unknown)), true},
		// The leader-change watch must not turn an unknown outcome into a retry.
		{"outcome unknown and leader changed", fmt.Errorf("%w: %w", unknown, errLeaderChanged), false},
		{"invalid", status.Error(codes.InvalidArgument, "bad"), false},
		{"other", errors.New("disk on fire"), false},
	}
	for _, c := range cases {
		if got := retryable(c.err); got != c.want {
			t.Errorf("%s: retryable(%v) = %v, want %v", c.name, c.err, got, c.want)
		}
	}
}
