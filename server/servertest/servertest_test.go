package servertest_test

import (
	"context"
	"testing"

	"github.com/romana/romana/api"
	"github.com/romana/romana/client"
	"github.com/romana/romana/plan"
	"github.com/romana/romana/server/servertest"
)

func TestStartRestart(t *testing.T) {
	ctx := context.Background()
	in := servertest.Start(t)
	if _, err := in.Client.AddNetwork(ctx, api.Network{Name: "blue", CIDR: "10.0.0.0/8",
		Fields: []plan.Field{{Name: "host", Bits: 8}, {Name: "tenant", Bits: 4}, {Name: "segment", Bits: 4}}}); err != nil {
		t.Fatal(err)
	}
	unix, err := client.New("unix://" + in.Socket)
	if err != nil {
		t.Fatal(err)
	}
	in.Restart()
	for _, c := range []*client.Client{in.Client, unix} {
		n, err := c.GetNetwork(ctx, "blue")
		if err != nil {
			t.Fatal(err)
		}
		if n.CIDR != "10.0.0.0/8" || n.EndpointBits != 8 {
			t.Fatalf("after restart: %+v", n)
		}
	}
	in.Stop()
	if err := in.Client.Health(ctx); err == nil {
		t.Fatal("healthy after Stop")
	}
}
