package ipam

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/romana/romana/api"
)

// TestStoreErr: etcd's errors for a leader change or a request that timed
// out with a failed leader are Unavailable (503, retry), like an
// unreachable store; they were Internal (500).
func TestStoreErr(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{rpctypes.ErrLeaderChanged, api.ReasonUnavailable},
		{rpctypes.ErrTimeoutDueToLeaderFail, api.ReasonUnavailable},
		{rpctypes.ErrTimeoutDueToConnectionLost, api.ReasonUnavailable},
		{rpctypes.ErrTimeout, api.ReasonUnavailable},
		{rpctypes.ErrNoLeader, api.ReasonUnavailable},
		{fmt.Errorf("wrapped: %w", rpctypes.ErrLeaderChanged), api.ReasonUnavailable},
		{context.DeadlineExceeded, api.ReasonUnavailable},
		{status.Error(codes.Unknown, "context deadline exceeded"), api.ReasonUnavailable}, // a server-side read timeout
		{status.Error(codes.Unknown, "something else"), api.ReasonInternal},
		{rpctypes.ErrCompacted, api.ReasonInternal},
		{errors.New("boom"), api.ReasonInternal},
	} {
		if got := api.ReasonOf(storeErr("op", tc.err)); got != tc.want {
			t.Errorf("storeErr(%v): %s, want %s", tc.err, got, tc.want)
		}
	}
}
