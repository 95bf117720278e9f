package firewall

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/romana/romana/sim"
)

// iperfServer starts an iperf3 server on dst's address, stopped when the
// benchmark ends.
func iperfServer(b *testing.B, dst *sim.Endpoint) {
	srv := dst.Command(context.Background(), "iperf3", "-s", "-B", dst.IP.String())
	if err := srv.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { srv.Process.Kill(); srv.Wait() })
}

// iperf runs a 3 s iperf3 client and returns Gbit/s received.
func iperf(b *testing.B, ctx context.Context, from, to *sim.Endpoint) float64 {
	var out []byte
	var err error
	for try := 0; try < 50; try++ { // the server may not listen yet
		out, err = from.Command(ctx, "iperf3", "-c", to.IP.String(), "-t", "3", "-J").Output()
		if err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		b.Fatalf("iperf3: %v\n%s", err, out)
	}
	var res struct {
		End struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	if err := json.Unmarshal(out, &res); err != nil || res.End.SumReceived.BitsPerSecond == 0 {
		b.Fatalf("iperf3 output: %v\n%s", err, out)
	}
	return res.End.SumReceived.BitsPerSecond / 1e9
}
