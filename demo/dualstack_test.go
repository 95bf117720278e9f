package demo

import (
	"bytes"
	"context"
	"testing"
	"time"
)

// TestDemoDualStack runs `romana demo --dual-stack`: every endpoint gets
// an IPv4 and an IPv6 address from one CNI ADD, and the matrix must hold
// over both families (TCP and ping), the same cells isolated.
func TestDemoDualStack(t *testing.T) {
	requireRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var out bytes.Buffer
	prefix := labPrefix(t, "romt-dd")
	res, err := Run(ctx, Options{Hosts: 3, Prefix: prefix, BinDir: binDir(t), Out: &out, DualStack: true})
	if err != nil {
		t.Fatalf("demo: %v\n%s", err, out.String())
	}
	if !res.OK || res.Matrix6 == nil || len(res.Matrix6.Endpoints) != 8 {
		t.Fatalf("demo result not ok: %+v\n%s", res, out.String())
	}
	isolated := 0
	for i, c := range res.Matrix6.Cells {
		if c.From == c.To {
			continue
		}
		if c != res.Matrix.Cells[i] {
			t.Errorf("IPv6 cell %+v differs from IPv4's %+v", c, res.Matrix.Cells[i])
		}
		if !c.Expected {
			isolated++
		}
	}
	if isolated == 0 {
		t.Error("no pair isolated over IPv6")
	}
	for _, e := range res.Matrix6.Endpoints {
		if !e.IP.Is4() || !e.IP6.Is6() {
			t.Errorf("endpoint %s: %s and %s, want one address of each family", e.Name, e.IP, e.IP6)
		}
	}
}
