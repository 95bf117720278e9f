package server_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/romana/romana/api"
	"github.com/romana/romana/client"
	"github.com/romana/romana/pki"
	"github.com/romana/romana/server/servertest"
)

// watchBenchEnv makes the test binary a process of watch clients for
// BenchmarkWatchStreams: "N,REVISION,CREDENTIAL-FILE".
const watchBenchEnv = "ROMANA_WATCH_BENCH_CLIENTS"

// BenchmarkWatchStreams measures what romanad holds for open agent watch
// streams: its heap in use and RSS, without streams and with 20 or 200
// streams open (each its own TLS connection, all from the same revision,
// as agents watch after their snapshot), the etcd watchers etcd itself
// counts, and the time from writing one event (the API call) until every
// stream has read it. The store is an external etcd and the streams are read by
// a child process, so that this process is romanad (and the harness) alone.
// The file uses only what the harness had before the watch feed, so that
// it can be run against older code for comparison.
func BenchmarkWatchStreams(b *testing.B) {
	for _, n := range []int{20, 200} {
		b.Run(fmt.Sprintf("streams=%d", n), func(b *testing.B) { benchWatchStreams(b, n) })
	}
}

func benchWatchStreams(b *testing.B, streams int) {
	e := servertest.StartEtcd(b, nil)
	in := servertest.Start(b, servertest.WithEtcdEndpoints(e.Endpoint))
	ctx := context.Background()
	for i := 0; i < 1000; i++ { // some history: the feed keeps it in memory
		if _, err := in.Client.AddTenant(ctx, api.Tenant{Name: fmt.Sprintf("t%04d", i)}); err != nil {
			b.Fatal(err)
		}
	}
	cred := in.WriteCredential(b, pki.Admin, b.TempDir())
	var heap0, heapN, rss0, rssN, goroutines0, goroutinesN, watchers0, watchersN float64
	var reached time.Duration // from writing one event to every stream having it
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		heap0, rss0, goroutines0 = benchMemory(b)
		watchers0 = benchEtcdWatchers(b, e.Endpoint)
		snap, err := in.Client.Snapshot(ctx)
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		child := exec.Command(os.Args[0], "-test.run=^TestWatchBenchClients$")
		child.Env = append(os.Environ(), fmt.Sprintf("%s=%d,%d,%s", watchBenchEnv, streams, snap.Revision+1, cred))
		child.Stderr = os.Stderr
		stdin, err := child.StdinPipe()
		if err != nil {
			b.Fatal(err)
		}
		stdout, err := child.StdoutPipe()
		if err != nil {
			b.Fatal(err)
		}
		if err := child.Start(); err != nil {
			b.Fatal(err)
		}
		lines := make(chan string, 16)
		go func() {
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				lines <- sc.Text()
			}
			close(lines)
		}()
		stop := func() {
			stdin.Close() // the child exits when its stdin closes
			done := make(chan error, 1)
			go func() { done <- child.Wait() }()
			select {
			case <-done:
			case <-time.After(30 * time.Second):
				child.Process.Kill() // our own child, by its PID
				<-done
			}
		}
		// Every stream is open in romanad; a change written now reaches
		// each, and the child says so once all have it.
		deadline := time.Now().Add(120 * time.Second)
		for benchGauge(b, in.HTTP, in.URL+"/metrics", "romanad_watch_streams") < float64(streams) {
			if time.Now().After(deadline) {
				stop()
				b.Fatalf("fewer than %d watch streams open after 120s", streams)
			}
			time.Sleep(20 * time.Millisecond)
		}
		written := time.Now()
		if _, err := in.Client.AddTenant(ctx, api.Tenant{Name: fmt.Sprintf("marker%d", i)}); err != nil {
			stop()
			b.Fatal(err)
		}
		select {
		case l, ok := <-lines:
			if !ok || l != "ready" {
				stop()
				b.Fatalf("watch clients: %q (%v), want ready", l, ok)
			}
		case <-time.After(120 * time.Second):
			stop()
			b.Fatal("watch clients not ready after 120s")
		}
		b.StopTimer()
		reached = time.Since(written)
		heapN, rssN, goroutinesN = benchMemory(b)
		watchersN = benchEtcdWatchers(b, e.Endpoint)
		stop()
		b.StartTimer()
	}
	b.StopTimer()
	const mib = 1 << 20
	b.ReportMetric(heapN/mib, "heap-MiB")
	b.ReportMetric((heapN-heap0)/mib, "heap-delta-MiB")
	b.ReportMetric(rssN/mib, "rss-MiB")
	b.ReportMetric((rssN-rss0)/mib, "rss-delta-MiB")
	b.ReportMetric(goroutinesN-goroutines0, "goroutines-delta")
	b.ReportMetric(watchersN, "etcd-watchers")
	b.ReportMetric(watchers0, "etcd-watchers-idle")
	b.ReportMetric(float64(reached.Microseconds())/1000, "event-to-all-ms")
}

// benchMemory returns this process's heap in use and RSS after a full
// collection that returns freed memory to the OS, and its goroutines.
func benchMemory(b *testing.B) (heap, rss, goroutines float64) {
	debug.FreeOSMemory()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		b.Fatal(err)
	}
	for _, l := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 64)
			if err != nil {
				b.Fatalf("VmRSS %q: %v", v, err)
			}
			rss = kb * 1024
		}
	}
	return float64(m.HeapInuse), rss, float64(runtime.NumGoroutine())
}

// benchEtcdWatchers is the number of watchers etcd has (its own metric).
func benchEtcdWatchers(b *testing.B, endpoint string) float64 {
	return benchGauge(b, http.DefaultClient, endpoint+"/metrics", "etcd_debugging_mvcc_watcher_total")
}

// benchGauge reads one unlabelled sample from a Prometheus text endpoint.
func benchGauge(b *testing.B, hc *http.Client, url, name string) float64 {
	resp, err := hc.Get(url)
	if err != nil {
		b.Fatalf("scrape %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		b.Fatalf("scrape %s: %s %v", url, resp.Status, err)
	}
	for _, l := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(l, name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				b.Fatalf("scrape %s: %q: %v", url, l, err)
			}
			return f
		}
	}
	b.Fatalf("scrape %s: no %s", url, name)
	return 0
}

// TestWatchBenchClients is the child process of BenchmarkWatchStreams: it
// opens the streams, prints "ready" once every one of them has had an
// event named marker*, and exits when its stdin closes.
func TestWatchBenchClients(t *testing.T) {
	spec := os.Getenv(watchBenchEnv)
	if spec == "" {
		t.Skip("the client process of BenchmarkWatchStreams, which starts it")
	}
	parts := strings.SplitN(spec, ",", 3)
	if len(parts) != 3 {
		t.Fatalf("%s=%q", watchBenchEnv, spec)
	}
	n, err1 := strconv.Atoi(parts[0])
	from, err2 := strconv.ParseInt(parts[1], 10, 64)
	if err1 != nil || err2 != nil {
		t.Fatalf("%s=%q", watchBenchEnv, spec)
	}
	cred, err := pki.LoadCredential(parts[2])
	if err != nil {
		t.Fatal(err)
	}
	cfg, _, err := cred.TLS()
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(cred.Server, client.WithTLS(cfg))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var marked atomic.Int64
	failed := make(chan error, n)
	for i := 0; i < n; i++ {
		go func() {
			seen := false
			err := c.Watch(ctx, from, func(e api.Event) error {
				if !seen && strings.HasPrefix(e.Name, "marker") {
					seen = true
					if marked.Add(1) == int64(n) {
						fmt.Println("ready")
					}
				}
				return nil
			})
			if ctx.Err() == nil {
				failed <- err
			}
		}()
	}
	stdinClosed := make(chan struct{})
	go func() { io.Copy(io.Discard, os.Stdin); close(stdinClosed) }()
	select {
	case <-stdinClosed:
	case err := <-failed:
		t.Fatalf("watch stream ended: %v", err)
	}
}
